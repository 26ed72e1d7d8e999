"""The FetalFlex denoiser: a diffusers UNet fused with a ControlNet-style anatomy branch.

Implements the conditioned denoiser of FetalFlex (Duan et al., MedIA 2025) as we read it:

* ``unet``: a diffusers ``UNet2DConditionModel`` (pixel space, 1 channel) whose time
  embedding also carries the plane and gestational age (``class_embed_type="projection"``).
  It has no cross-attention: ``encoder_hidden_states`` is a constant zero token.
* ``control``: a diffusers ``ControlNetModel`` copied from the UNet's encoder. Its
  conditioning embedding (the *anatomy encoder*) reads the layout channels at full
  resolution (and, with ``condition_channels``, the condition vector broadcast as constant
  channels) and its zero-initialised outputs are added to the UNet's skip connections,
  scaled per sample by ``control_scale``.

Output: the **v-prediction** ``v = alpha_t * eps - sigma_t * x0`` (Salimans & Ho 2022).
Why v and not eps: x0 = alpha_t x_t - sigma_t v is well conditioned at every noise
level, so the x0 previews that the two-stage adaptive sampler watches are usable from
the first steps, and the loss weights high- and low-noise steps evenly.

``forward`` has no data-dependent Python control flow, so it exports to ONNX as one graph
(one call per sampling step, no residual tensors on the wire).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fetalflex.model.config import DenoiserConfig

GA_CENTER, GA_SCALE = 25.0, 7.0
CONDITION_EXTRA = 3  # the condition vector: plane one-hot, then null flag, GA, GA-known flag


def condition_vector(plane: Tensor, ga: Tensor, num_planes: int,
                     appearance: Tensor | None = None, num_appearances: int = 0) -> Tensor:
    """(N,) plane ids (-1 = dropped), (N,) GA weeks (NaN = unknown) and, for a model with
    appearances, (N,) appearance indices -> (N, cond_dim)."""
    known_plane = plane >= 0
    onehot = torch.nn.functional.one_hot(plane.clamp(min=0), num_planes + 1).float()
    onehot = torch.where(known_plane[:, None], onehot,
                         torch.nn.functional.one_hot(torch.full_like(plane, num_planes),
                                                     num_planes + 1).float())
    ga_known = ~torch.isnan(ga)
    ga_val = torch.where(ga_known, (ga - GA_CENTER) / GA_SCALE, torch.zeros_like(ga))
    parts = [onehot, ga_val[:, None], ga_known.float()[:, None]]
    if num_appearances:
        if appearance is None:
            raise ValueError("appearance: this model's condition needs an appearance per sample")
        parts.append(torch.nn.functional.one_hot(appearance.to(plane.device).long(),
                                                 num_appearances).float())
    return torch.cat(parts, dim=1)


def drop_condition(layout: Tensor, cond: Tensor, control_scale: Tensor, drop: Tensor,
                   num_planes: int) -> tuple[Tensor, Tensor, Tensor]:
    """The unconditional input of classifier-free guidance where ``drop`` (N,) is True:
    all-zero layout, 'no plane, GA unknown', control scale 0 (the UNet alone). The
    appearance part of the condition is kept: guidance strengthens the anatomy and the
    plane, not the look (the unconditional row is "any scan of this appearance").

    One definition for both sides: training drops conditions to exactly this, and the
    guidance wrapper's unconditional row is exactly this. (The v1 weights were trained with
    layout and plane dropped independently and the control branch always on, but sampled
    with this input. That mismatch was found beside the v1 drift; the drift itself came
    from the DDIM step, see ``sampling/ddim.py``.)
    """
    n = drop.shape[0]
    null = condition_vector(torch.full((n,), -1, dtype=torch.long, device=drop.device),
                            torch.full((n,), float("nan"), device=drop.device), num_planes)
    null = torch.cat([null.to(cond.dtype), cond[:, null.shape[1]:]], dim=1)
    d4 = drop.view(-1, 1, 1, 1)
    return (torch.where(d4, torch.zeros_like(layout), layout),
            torch.where(drop[:, None], null, cond),
            torch.where(drop, torch.zeros_like(control_scale), control_scale))


def plane_conditions(plane: int, ga: list[float | None], num_planes: int,
                     appearance: int = -1, num_appearances: int = 0) -> Tensor:
    """Condition vectors of N samples of one plane (GA None = unknown) and one appearance
    (an index into the model's appearances; ignored by a model that has none)."""
    g = torch.tensor([float("nan") if v is None else v for v in ga], dtype=torch.float32)
    app = torch.full((len(ga),), appearance, dtype=torch.long) if num_appearances else None
    return condition_vector(torch.full((len(ga),), plane), g, num_planes, app, num_appearances)


def with_planes_mixed(cond: Tensor, planes: list[tuple[int, ...]], num_planes: int) -> Tensor:
    """``cond`` with row i's plane one-hot (its first ``num_planes`` + 1 entries) replaced
    by the mean one-hot of ``planes[i]`` (plane indices; empty: row i unchanged): the
    condition "one of these planes" that plane-contrast guidance moves away from. GA and
    appearance are kept."""
    out = cond.clone()
    for i, ps in enumerate(planes):
        if ps:
            out[i, :num_planes + 1] = 0.0
            out[i, list(ps)] = 1.0 / len(ps)
    return out


def _blocks(cfg: DenoiserConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return down, up


class FetalFlexDenoiser(nn.Module):
    """v-prediction denoiser conditioned on anatomy layout, plane and gestational age."""

    config: DenoiserConfig

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        down, up = _blocks(config)
        # Attention blocks of UNet2DConditionModel are CrossAttn*; with no text we use plain
        # self-attention-free Down/Up blocks and put attention only in the mid block.
        down = tuple("DownBlock2D" for _ in down)
        up = tuple("UpBlock2D" for _ in up)
        self.unet = UNet2DConditionModel(
            sample_size=config.unet_size, in_channels=config.unet_channels,
            out_channels=config.unet_channels, down_block_types=down, up_block_types=up,
            mid_block_type="UNetMidBlock2D", block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block, norm_num_groups=config.norm_num_groups,
            cross_attention_dim=8, attention_head_dim=config.attention_head_dim,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=config.cond_dim,
        )
        self.control = ControlNetModel(
            in_channels=config.unet_channels, conditioning_channels=config.control_input_channels,
            down_block_types=down, mid_block_type="UNetMidBlock2D",
            block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block, norm_num_groups=config.norm_num_groups,
            cross_attention_dim=8, attention_head_dim=config.attention_head_dim,
            class_embed_type="projection",
            projection_class_embeddings_input_dim=config.cond_dim,
            conditioning_embedding_out_channels=config.anatomy_encoder_channels,
        )
        self.copy_unet_encoder_to_control()

    def copy_unet_encoder_to_control(self) -> None:
        """ControlNet init: its encoder starts as a copy of the UNet's (zero convs stay 0)."""
        u, c = self.unet, self.control
        c.conv_in.load_state_dict(u.conv_in.state_dict())
        c.time_proj.load_state_dict(u.time_proj.state_dict())
        c.time_embedding.load_state_dict(u.time_embedding.state_dict())
        if c.class_embedding is not None and u.class_embedding is not None:
            c.class_embedding.load_state_dict(u.class_embedding.state_dict())
        c.down_blocks.load_state_dict(u.down_blocks.state_dict())
        c.mid_block.load_state_dict(u.mid_block.state_dict())

    @property
    def anatomy_encoder(self) -> nn.Module:
        """Layout channels (full resolution) -> features at the resolution of ``unet.conv_in``."""
        return self.control.controlnet_cond_embedding

    def anatomy_input(self, layout: Tensor, cond: Tensor) -> Tensor:
        """What the anatomy encoder reads: the layout, then (``condition_channels``) the
        condition vector broadcast as constant channels."""
        if not self.config.condition_channels:
            return layout
        h, w = layout.shape[-2:]
        return torch.cat([layout, cond.to(layout.dtype)[:, :, None, None].expand(-1, -1, h, w)],
                         dim=1)

    def patchify(self, x: Tensor) -> Tensor:
        """Space-to-depth: (N,C,H,W) -> (N,C*p*p,H/p,W/p); identity when p = 1."""
        p = self.config.patch_size
        return x if p == 1 else nn.functional.pixel_unshuffle(x, p)

    def unpatchify(self, x: Tensor) -> Tensor:
        p = self.config.patch_size
        return x if p == 1 else nn.functional.pixel_shuffle(x, p)

    def image_features(self, x0: Tensor) -> Tensor:
        """What the UNet's input convolution computes from a clean image: the pre-alignment
        target of the anatomy encoder."""
        return self.unet.conv_in(self.patchify(x0))

    def forward(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                control_scale: Tensor) -> Tensor:
        """x_t (N,1,H,W), t (N,), layout (N,K,H,W), cond (N,cond_dim), control_scale (N,)."""
        n = x_t.shape[0]
        ehs = x_t.new_zeros((n, 1, 8))
        x_t = self.patchify(x_t)
        layout = self.anatomy_input(layout, cond)
        down_res, mid_res = self.control(
            x_t, t, encoder_hidden_states=ehs, controlnet_cond=layout, class_labels=cond,
            return_dict=False,
        )
        s = control_scale.to(x_t.dtype)[:, None, None, None]
        down_res = [r * s for r in down_res]
        mid_res = mid_res * s
        return self.unpatchify(self.unet(
            x_t, t, encoder_hidden_states=ehs, class_labels=cond,
            down_block_additional_residuals=down_res, mid_block_additional_residual=mid_res,
            return_dict=False,
        )[0])

    def forward_base(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """The UNet alone (no anatomy branch): the stage-1 denoiser of the training recipe."""
        ehs = x_t.new_zeros((x_t.shape[0], 1, 8))
        return self.unpatchify(self.unet(self.patchify(x_t), t, encoder_hidden_states=ehs,
                                         class_labels=cond, return_dict=False)[0])

    # ----------------------------------------------------------------- persistence
    def save(self, directory: Path, state: dict[str, Tensor] | None = None,
             meta: dict[str, object] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / "config.json")
        src = state if state is not None else self.state_dict()
        tensors = {k: v.detach().cpu().contiguous() for k, v in src.items()}
        save_file(tensors, str(directory / "model.safetensors"),
                  metadata={"format": "pt", "fetalflex": json.dumps(meta or {})})

    @staticmethod
    def read_meta(directory: Path) -> dict[str, Any]:
        """The ``meta`` that ``save`` wrote with the weights (empty when none)."""
        with safe_open(str(directory / "model.safetensors"), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("fetalflex", "{}"))
        return meta if isinstance(meta, dict) else {}

    @classmethod
    def load(cls, directory: Path, map_location: str = "cpu") -> FetalFlexDenoiser:
        cfg = DenoiserConfig.load(directory / "config.json")
        model = cls(cfg)
        state = load_file(str(directory / "model.safetensors"), device=map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{directory}: weights do not match config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model
