"""The baseline a user would otherwise run: diffusers' RePaint loop with its defaults.

``RePaintPipeline`` (diffusers) with its default arguments: 250 inference steps, jump
length 10, 10 resamples, eta 0, over ``RePaintScheduler`` built with our training noise
schedule. Our denoiser predicts v; the scheduler wants epsilon, so each output is
converted (``split_output``) before ``scheduler.step``. Conditioning and guidance are
the same guided denoiser the engine uses, so only the loop differs.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import RePaintScheduler

from fetalflex.anatomy.layout import Layout
from fetalflex.generation import Engine, to_float, to_uint8
from fetalflex.request import DEFAULT_CONTROL_SCALE, DEFAULT_GUIDANCE, RepaintSettings
from fetalflex.sampling.denoisers import CountingCall
from fetalflex.sampling.repaint import feathered

DEFAULTS = {"num_inference_steps": 250, "jump_length": 10, "jump_n_sample": 10}


def diffusers_repaint(engine: Engine, image: np.ndarray, layout: Layout, region: np.ndarray,
                      seed: int, guidance: float = DEFAULT_GUIDANCE,
                      feather_px: float = RepaintSettings().feather_px,
                      **schedule: int) -> tuple[np.ndarray, int]:
    """Repaint ``image`` (uint8) in ``region`` for ``layout`` with diffusers' RePaint loop;
    returns the image (outside the region = the reference) and the denoiser calls."""
    cfg = engine.cfg
    sched = RePaintScheduler(num_train_timesteps=cfg.num_train_timesteps,
                             beta_schedule=cfg.beta_schedule, eta=0.0, clip_sample=True)
    sched.set_timesteps(**{**DEFAULTS, **schedule})
    call = CountingCall(engine.backend.call)
    den = engine._conditioning(call, [layout], None)(None, guidance, DEFAULT_CONTROL_SCALE)
    ac = engine.ac
    keep = torch.from_numpy(1.0 - feathered(region, feather_px))[None, None]
    original = to_float(image[None])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(original.shape, generator=gen)
    t_last = int(sched.timesteps[0]) + 1
    for t in sched.timesteps.tolist():
        if t < t_last:
            tt = torch.full((1,), t, dtype=torch.long)
            out = den(x, tt)
            a = ac[t]
            eps = a.sqrt() * out + (1 - a).sqrt() * x if cfg.prediction_type == "v_prediction" \
                else out
            x = sched.step(eps, t, x, original, keep, generator=gen).prev_sample
        else:
            x = sched.undo_step(x, t_last, generator=gen)
        t_last = t
    twin = to_uint8(x)[0]
    return np.where(region, twin, image), call.calls
