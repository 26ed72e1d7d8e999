"""Joint geometric augmentation of an image with its layout, as one would augment real scans.

The image and its one-hot layout get the same random warp: a horizontal flip, a small
rotation / anisotropic scale / shift about the image centre, and a smooth elastic
displacement field. The warp changes the size, shape and position of each structure
*together with its pixels*, so the model sees each label with many sizes and shapes and has
to learn that a structure's label decides its local appearance, not its usual outline.
This is what makes edited (abnormal) layouts render without abnormal data: a team with only
real normal scans and their label maps can do exactly the same. Nothing here renders a new
phantom or knows about anomaly presets.

The layout is resampled with nearest neighbour (it stays one-hot); the image bilinearly.
What the warp brings in from outside the frame is background: black in the image, the
background label in the layout.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from torch.nn import functional as nnf

from fetalflex.anatomy.structures import BACKGROUND


class AugmentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prob: float = Field(default=0.0, ge=0, le=1)        # share of samples warped
    flip: bool = True                                   # left-right mirror (p = 0.5)
    rotate_deg: float = Field(default=8.0, ge=0, le=45)
    scale: float = Field(default=0.15, ge=0, le=0.5)    # per-axis log-uniform +-
    shift: float = Field(default=0.06, ge=0, le=0.5)    # fraction of the half-width
    elastic: float = Field(default=0.04, ge=0, le=0.3)  # displacement std, half-widths
    elastic_grid: int = Field(default=5, ge=2, le=32)   # control points per axis


def _grids(n: int, size: int, cfg: AugmentConfig, gen: torch.Generator) -> Tensor:
    """(n, size, size, 2) sampling grids in [-1, 1] coordinates."""
    def u(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    ang = u(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180
    sx = torch.exp(u(-cfg.scale, cfg.scale))
    sy = torch.exp(u(-cfg.scale, cfg.scale))
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if cfg.flip else \
        torch.ones(n)
    cos, sin = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * sx * flip
    theta[:, 0, 1] = -sin * sy
    theta[:, 1, 0] = sin * sx * flip
    theta[:, 1, 1] = cos * sy
    theta[:, 0, 2] = u(-cfg.shift, cfg.shift)
    theta[:, 1, 2] = u(-cfg.shift, cfg.shift)
    grid = nnf.affine_grid(theta, [n, 1, size, size], align_corners=False)
    if cfg.elastic > 0:
        g = cfg.elastic_grid
        coarse = torch.randn(n, 2, g, g, generator=gen) * cfg.elastic
        field = nnf.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
        grid = grid + field.permute(0, 2, 3, 1)
    return grid


def joint_augment(image: Tensor, layout: Tensor, cfg: AugmentConfig,
                  gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Warp a share ``cfg.prob`` of the batch; image (N,1,H,W), layout (N,K,H,W) one-hot."""
    n, size = image.shape[0], image.shape[-1]
    if cfg.prob <= 0 or n == 0:
        return image, layout
    pick = torch.rand(n, generator=gen) < cfg.prob
    grid = _grids(n, size, cfg, gen).to(image.device)
    if not bool(pick.any()):
        return image, layout
    idx = pick.nonzero().flatten().to(image.device)
    g = grid[idx]
    img = image.clone()
    lay = layout.clone()
    # Images live in [-1, 1] with -1 = black; zero padding is applied to image + 1.
    img[idx] = nnf.grid_sample(image[idx] + 1, g, mode="bilinear", padding_mode="zeros",
                             align_corners=False) - 1
    warped = nnf.grid_sample(layout[idx], g, mode="nearest", padding_mode="zeros",
                           align_corners=False)
    outside = warped.sum(1) == 0
    warped[:, BACKGROUND][outside] = 1.0
    lay[idx] = warped
    return img, lay
