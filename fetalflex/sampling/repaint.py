"""Repaint: regenerate only an edit region, keep every other pixel of a reference.

FetalFlex's repaint strategy, after RePaint (Lugmayr et al. 2022), on a coarse DDIM grid:

1. At every denoising transition t -> t' the known region is replaced by the reference
   noised to level t (fresh noise each time): x = m * x + (1 - m) * q(x_t | ref).
2. The denoiser (conditioned on the *edited* layout) moves x from t to t' (DDIM, eta 0).
3. Every ``jump_length`` steps the chain jumps back (re-noises) ``jump_length`` steps,
   ``jump_n_sample - 1`` times, so the region and its surroundings harmonize.
4. The final image is m * x + (1 - m) * ref with a mask that is exactly 0 outside the
   region: outside it the output IS the reference (bit-identical after encoding).

The mask is feathered *inside* the region (a ramp from 0 at its border to 1 at
``feather_px`` inwards), so there is no hard seam. The schedule and the region's
dilation and feathering are the request schema's :class:`~fetalflex.request.RepaintSettings`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from torch import Tensor

from fetalflex.request import RepaintSettings
from fetalflex.sampling.denoisers import X0Denoiser
from fetalflex.sampling.events import Final, SamplerEvent, Step, StopCheck, check_stop, final
from fetalflex.sampling.schedules import repaint_transitions, trailing_timesteps
from fetalflex.sampling.steps import SampleNoise, ddim_to, noise_to, renoise


def edit_region(reference_map: NDArray[np.uint8], edited_map: NDArray[np.uint8],
                dilate_px: float) -> NDArray[np.bool_]:
    """Default edit region: where the layouts differ, dilated (never outside the fan)."""
    diff = reference_map != edited_map
    if not diff.any():
        return diff
    grown = ndimage.distance_transform_edt(~diff) <= dilate_px
    return grown & (edited_map != 0)


def feathered(region: NDArray[np.bool_], feather_px: float) -> NDArray[np.float32]:
    """1 deep inside the region, ramping to 0 at its border; exactly 0 outside."""
    if feather_px <= 0:
        return region.astype(np.float32)
    inside = ndimage.distance_transform_edt(region)
    return np.clip(inside / feather_px, 0.0, 1.0).astype(np.float32) * region


def repaint_progressive(
    denoise: X0Denoiser, reference: Tensor, mask: Tensor, ac: Tensor,
    settings: RepaintSettings, noise: SampleNoise | None = None,
    should_stop: StopCheck | None = None,
) -> Iterator[SamplerEvent]:
    """One step per denoiser call (``denoised``: the x0 estimate inside the region, the
    reference outside), then the final image. ``settings`` gives the schedule (its
    ``steps``, ``jump_length`` and ``jump_n_sample``); ``mask`` is the feathered region."""
    n = reference.shape[0]
    noise = noise or SampleNoise(list(range(n)))
    ts = trailing_timesteps(len(ac), settings.steps)
    trans = repaint_transitions(ts, settings.jump_length, settings.jump_n_sample)
    x = noise(reference.shape)
    calls = 0
    for t_from, t_to in trans:
        check_stop(should_stop)
        tf = torch.full((n,), t_from, dtype=torch.long)
        tt = torch.full((n,), t_to, dtype=torch.long)
        if t_to > t_from:  # jump back: re-noise, no denoiser call
            x = renoise(x, ac, tf, tt, noise(x.shape))
            continue
        known = noise_to(reference, ac, tf, noise(x.shape))
        x = mask * x + (1 - mask) * known
        x0 = denoise(x, tf)
        x = ddim_to(x0, x, tf, tt, ac)
        calls += 1
        yield Step(calls - 1, t_from, x, mask * x0 + (1 - mask) * reference)
    yield Final(mask * x + (1 - mask) * reference, calls)


def repaint(denoise: X0Denoiser, reference: Tensor, mask: Tensor, ac: Tensor,
            settings: RepaintSettings, noise: SampleNoise | None = None) -> Tensor:
    return final(repaint_progressive(denoise, reference, mask, ac, settings, noise)).x
