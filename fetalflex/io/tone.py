"""Tone curves: a monotone grey-level remap of sampled images, defined once.

A tone curve is 256 output grey levels, one per input level (uint8), never decreasing, so
it keeps every order between pixels: bright stays brighter than dark, an edited region
that got darker stays darker. A set of weights may carry one per appearance
(``SamplingDefaults.tone_curve``); ``Engine`` applies it to every image it samples, and to
the generated pixels of a twin, never to a user's own pixels.

Why it exists: a few-step student regressed on its teacher's trajectories
(``fetalflex distill``) lands near, not on, the black its teacher writes in fluid and
outside the sector (measured in session 25: 14 % of the student's head-scan pixels exactly
black, 27 % of its teacher's, 33 % of real scans'; the rest a faint 1-5 level haze), and
radiomics texture distances read that haze as a different texture. ``fit_tone_curve`` maps
the student's grey-level distribution onto its teacher's (quantile mapping) on training
layouts only; ``fetalflex distill --calibrate`` fits and stores it. ``fetalflex
calibrate-real`` fits weights' real look onto real training scans the same way (per
plane, or darkening only, on request; measured, not shipped: docs/EVALUATION.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

TONE_LEVELS: Final = 256  # one output level per uint8 input level


def check_tone_curve(curve: Sequence[int], name: str = "tone_curve") -> None:
    """A named error unless ``curve`` is 256 integer levels in [0, 255], never decreasing."""
    if len(curve) != TONE_LEVELS:
        raise ValueError(f"{name}: needs {TONE_LEVELS} output levels (one per input grey "
                         f"level), got {len(curve)}")
    arr = np.asarray(curve)
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"{name}: levels must be integers within [0, 255]")
    drops = np.flatnonzero(np.diff(arr) < 0)
    if len(drops):
        i = int(drops[0])
        raise ValueError(f"{name}: must never decrease (it would swap bright and dark); "
                         f"level {i} -> {arr[i]} but {i + 1} -> {arr[i + 1]}")


def apply_tone(images: NDArray[np.uint8], curve: Sequence[int] | None) -> NDArray[np.uint8]:
    """``images`` remapped through ``curve`` (None: unchanged, the same array)."""
    if curve is None:
        return images
    if images.dtype != np.uint8:
        raise TypeError(f"apply_tone: needs uint8 images, got {images.dtype}")
    return np.asarray(curve, dtype=np.uint8)[images]


def fit_tone_curve(source: NDArray[np.uint8], target: NDArray[np.uint8]) -> tuple[int, ...]:
    """The monotone curve that carries ``source``'s grey-level distribution onto
    ``target``'s (quantile mapping): each source level goes to the target level at the
    middle of its own quantile range (ties at one level, such as many black pixels, map
    to one level). Both: uint8 pixels of any shape, pooled."""
    if source.dtype != np.uint8 or target.dtype != np.uint8:
        raise TypeError("fit_tone_curve: needs uint8 pixels")
    if source.size == 0 or target.size == 0:
        raise ValueError("fit_tone_curve: needs pixels on both sides")
    cs = np.cumsum(np.bincount(source.ravel(), minlength=TONE_LEVELS)) / source.size
    ct = np.cumsum(np.bincount(target.ravel(), minlength=TONE_LEVELS)) / target.size
    below = np.concatenate([[0.0], cs[:-1]])
    mid = (below + cs) / 2
    out = np.searchsorted(ct, mid - 1e-12, side="left").clip(0, TONE_LEVELS - 1)
    curve = tuple(int(v) for v in np.maximum.accumulate(out))
    check_tone_curve(curve)
    return curve


def compose(outer: Sequence[int], inner: Sequence[int]) -> tuple[int, ...]:
    """The curve that applies ``inner``, then ``outer``."""
    return tuple(int(outer[v]) for v in inner)


def black_fraction(images: NDArray[np.uint8]) -> float:
    """The share of exactly black pixels (4 decimals): what a tone curve's fit reports."""
    return round(float((images == 0).mean()), 4)


def identity_curve() -> tuple[int, ...]:
    """The curve that changes nothing."""
    return tuple(range(TONE_LEVELS))
