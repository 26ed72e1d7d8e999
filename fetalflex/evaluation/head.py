"""Head segmentation and biometry on real scans (HC18): the instrument that reads a head
outline back from an image, real or generated.

The segmenter (``evaluation.segmenter.Segmenter`` with two labels: outside / inside the
head) is trained on the training split's scans, at the model's size; the head
circumference is measured as the sonographer's is: an ellipse fitted to the head region
(its second moments: a filled ellipse's covariance has eigenvalues a^2/4 and b^2/4), its
circumference (Ramanujan) times the millimetres per pixel.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from torch import nn

from fetalflex.data.importers.ellipse import Ellipse
from fetalflex.evaluation.classifier import mixed_batch_counts
from fetalflex.evaluation.real_data import RealSet, head_mask, head_shape
from fetalflex.evaluation.segmenter import Segmenter, SegmenterConfig, _soft_dice_loss
from fetalflex.io import pixels
from fetalflex.model.hardware import bf16_native
from fetalflex.training.augment import AugmentConfig, joint_augment


def head_targets(data: RealSet) -> NDArray[np.uint8]:
    """(N, H, W) 1 inside the head outline, 0 elsewhere (records with an outline only)."""
    size = data.images.shape[-1]
    out = []
    for r in data.records:
        shape = head_shape(r)
        if shape is None:
            raise ValueError(f"{r.image}: no head outline (only HC18-like records have one)")
        out.append(head_mask(shape, size).astype(np.uint8))
    return np.stack(out)


def train_head_segmenter(data: RealSet, steps: int = 1200, batch_size: int = 16,
                         lr: float = 2e-3, seed: int = 0) -> Segmenter:
    """Train on ``data`` (the training split's scans with a head outline)."""
    return train_mask_segmenter(data.images, head_targets(data), steps, batch_size, lr, seed)


def train_mask_segmenter(images: NDArray[np.uint8], masks: NDArray[np.uint8], steps: int = 1200,
                         batch_size: int = 16, lr: float = 2e-3, seed: int = 0,
                         first: NDArray[np.bool_] | None = None,
                         first_share: float | None = None) -> Segmenter:
    """Train on (N, H, W) scans and their (N, H, W) head masks (1 inside): real scans with
    the sonographer's outline, generated scans with the requested one, or both.

    ``first`` (a boolean mask over the scans) with ``first_share``: that share of every batch
    (rounded, at least one scan and at most all but one) drawn from the marked scans, the rest
    from the others; without them every batch is drawn from one pool."""
    if images.shape != masks.shape or images.ndim != 3 or not len(images):
        raise ValueError(f"images: expected (N, H, W) matching the masks, got {images.shape} "
                         f"and {masks.shape}")
    groups = _batch_groups(len(images), batch_size, first, first_share)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    size = int(images.shape[-1])
    model = Segmenter(SegmenterConfig(channels=(16, 32, 64, 128), num_labels=2,
                                      image_size=size))
    x_all = torch.from_numpy(pixels.to_unit(images))[:, None]
    y_all = torch.from_numpy(masks.astype(np.int64))
    aug = AugmentConfig(prob=0.7)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    bf16 = bf16_native()
    model.train()
    for _ in range(steps):
        idx = torch.cat([g[torch.randint(0, len(g), (n,), generator=gen)] for g, n in groups])
        onehot = nn.functional.one_hot(y_all[idx], 2).permute(0, 3, 1, 2).float()
        x, onehot = joint_augment(x_all[idx], onehot, aug, gen)
        x = (x + 1) * torch.empty(len(x), 1, 1, 1).uniform_(0.75, 1.25, generator=gen) - 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x.clamp(-1, 1)).float()
        loss = nn.functional.cross_entropy(logits, onehot.argmax(1)) + _soft_dice_loss(
            logits, onehot)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def _batch_groups(n_scans: int, batch_size: int, first: NDArray[np.bool_] | None,
                  first_share: float | None) -> list[tuple[torch.Tensor, int]]:
    """(scan indices, scans per batch) for each group a batch draws from."""
    if first_share is None:
        if first is not None:
            raise ValueError("first_share: give the share of every batch drawn from the marked "
                             "scans, or leave first out")
        return [(torch.arange(n_scans), min(batch_size, n_scans))]
    if not 0.0 < first_share < 1.0:
        raise ValueError(f"first_share: must be within (0, 1), got {first_share}")
    if first is None or first.dtype != np.bool_ or first.shape != (n_scans,):
        raise ValueError(f"first: first_share needs a boolean mask over the {n_scans} scans")
    if batch_size < 2:
        raise ValueError(f"batch_size: mixed batches need at least 2 scans, got {batch_size}")
    marked = torch.from_numpy(np.nonzero(first)[0])
    other = torch.from_numpy(np.nonzero(~first)[0])
    if not len(marked) or not len(other):
        raise ValueError(f"first: mixed batches need marked and unmarked scans, got "
                         f"{len(marked)} marked and {len(other)} unmarked")
    n_first, n_other = mixed_batch_counts(batch_size, first_share)
    return [(marked, n_first), (other, n_other)]


def segment_heads(model: Segmenter, images: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """(N, H, W) head masks: the largest component of the read head, holes filled."""
    read = model.predict(torch.from_numpy(pixels.to_unit(images))[:, None])
    out = np.zeros(read.shape, dtype=bool)
    for i, m in enumerate(read):
        comps, n = ndimage.label(m == 1)
        if n:
            sizes = ndimage.sum(np.ones_like(comps), comps, range(1, n + 1))
            out[i] = ndimage.binary_fill_holes(comps == 1 + int(np.argmax(sizes)))
    return out


def mask_ellipse(mask: NDArray[np.bool_]) -> Ellipse | None:
    """The ellipse of a filled region from its second moments (None: too small)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 10:
        return None
    cov = np.cov(np.stack([xs, ys]).astype(np.float64)) + np.eye(2) / 12.0
    evals, evecs = np.linalg.eigh(cov)
    a, b = 2 * math.sqrt(max(evals[1], 1e-9)), 2 * math.sqrt(max(evals[0], 1e-9))
    ang = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1]))
    return Ellipse(cx=float(xs.mean()), cy=float(ys.mean()), a=a, b=b, angle=ang)


def circumference_mm(mask: NDArray[np.bool_], mm_per_px: float) -> float:
    """Head circumference (mm) of a head mask; NaN when no head was read."""
    e = mask_ellipse(mask)
    return float("nan") if e is None else e.circumference() * mm_per_px


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    denom = int(a.sum() + b.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(a, b).sum()) / denom
