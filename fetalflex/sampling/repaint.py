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
``feather_px`` inwards), so there is no hard seam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from torch import Tensor

from fetalflex.sampling.denoisers import Denoiser
from fetalflex.sampling.schedules import repaint_transitions, trailing_timesteps
from fetalflex.sampling.steps import SampleNoise, ddim_move, noise_to, renoise, split_output


@dataclass(frozen=True)
class RepaintOptions:
    steps: int = 20           # coarse DDIM grid
    jump_length: int = 5      # RePaint j
    jump_n_sample: int = 2    # RePaint r (1 = no resampling)
    feather_px: float = 3.0   # ramp width inside the region
    dilate_px: float = 6.0    # default region = changed pixels dilated by this much


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
    denoise: Denoiser, reference: Tensor, mask: Tensor, ac: Tensor, prediction_type: str,
    options: RepaintOptions = RepaintOptions(), noise: SampleNoise | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[dict[str, object]]:
    """Yields one event per denoiser call; the last event's ``x`` is the final image."""
    n = reference.shape[0]
    noise = noise or SampleNoise(list(range(n)))
    ts = trailing_timesteps(len(ac), options.steps)
    trans = repaint_transitions(ts, options.jump_length, options.jump_n_sample)
    x = noise(reference.shape)
    calls = 0
    for t_from, t_to in trans:
        if should_stop is not None and should_stop():
            raise InterruptedError("sampling cancelled")
        tf = torch.full((n,), t_from, dtype=torch.long)
        tt = torch.full((n,), t_to, dtype=torch.long)
        if t_to > t_from:  # jump back: re-noise, no denoiser call
            x = renoise(x, ac, tf, tt, noise(x.shape))
            continue
        known = noise_to(reference, ac, tf, noise(x.shape))
        x = mask * x + (1 - mask) * known
        out = denoise(x, tf)
        x0, eps = split_output(out, x, tf, ac, prediction_type)
        x = ddim_move(x0, eps, ac, tt)
        calls += 1
        yield {"x": x, "i": calls - 1, "t": t_from, "denoised": mask * x0 + (1 - mask) * reference}
    final = mask * x + (1 - mask) * reference
    yield {"x": final, "i": calls, "t": -1, "denoised": final, "final": True}


def repaint(denoise: Denoiser, reference: Tensor, mask: Tensor, ac: Tensor,
            prediction_type: str, options: RepaintOptions = RepaintOptions(),
            noise: SampleNoise | None = None) -> Tensor:
    x = reference
    for ev in repaint_progressive(denoise, reference, mask, ac, prediction_type, options,
                                  noise):
        x = ev["x"]  # type: ignore[assignment]
    return x
