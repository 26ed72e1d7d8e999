"""The DDIM sampler as a function over a denoiser callable (diffusers' DDIMScheduler math).

``sample_ddim_progressive`` yields one event per step (``{"x", "i", "t", "denoised"}``, the
same callback shape for every sampler); ``sample_ddim`` returns the final image. Both
share one loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, SchedulerMixin
from torch import Tensor

from fetalflex.model.config import DenoiserConfig
from fetalflex.sampling.denoisers import Denoiser

Event = dict[str, Any]


def ddim_scheduler(cfg: DenoiserConfig) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type, clip_sample=True, clip_sample_range=1.0,
        set_alpha_to_one=True, timestep_spacing="trailing",
    )


def sample_ddim_progressive(
    denoise: Denoiser, x: Tensor, scheduler: DDIMScheduler, steps: int, *, eta: float = 0.0,
    generator: torch.Generator | None = None, should_stop: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    if steps < 1:
        raise ValueError(f"steps: must be at least 1, got {steps}")
    scheduler.set_timesteps(steps)
    n = x.shape[0]
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise InterruptedError("sampling cancelled")
        out = denoise(x, torch.full((n,), int(t), dtype=torch.long))
        res = scheduler.step(out, t, x, eta=eta, generator=generator)
        x = res.prev_sample
        yield {"x": x, "i": i, "t": int(t), "denoised": res.pred_original_sample}


def sample_ddim(denoise: Denoiser, x: Tensor, scheduler: DDIMScheduler, steps: int, *,
                eta: float = 0.0, generator: torch.Generator | None = None,
                callback: Callable[[Event], None] | None = None) -> Tensor:
    for ev in sample_ddim_progressive(denoise, x, scheduler, steps, eta=eta,
                                      generator=generator):
        if callback is not None:
            callback(ev)
        x = ev["x"]
    return x


def dpmsolver_scheduler(cfg: DenoiserConfig) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2M), Lu et al. 2022, via diffusers."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type, algorithm_type="dpmsolver++", solver_order=2,
        timestep_spacing="trailing", final_sigmas_type="zero", lower_order_final=True,
    )


def sample_scheduler_progressive(
    denoise: Denoiser, x: Tensor, scheduler: SchedulerMixin, steps: int, *,
    preview: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    """Any diffusers scheduler (DPM-Solver++ here) over a denoiser, one event per step.

    ``preview(out, x_t, t) -> x0`` supplies the predicted clean image when the scheduler
    does not report it."""
    if steps < 1:
        raise ValueError(f"steps: must be at least 1, got {steps}")
    scheduler.set_timesteps(steps)
    n = x.shape[0]
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise InterruptedError("sampling cancelled")
        tt = torch.full((n,), int(t), dtype=torch.long)
        out = denoise(x, tt)
        den = preview(out, x, tt) if preview is not None else None
        x = scheduler.step(out, t, x).prev_sample
        yield {"x": x, "i": i, "t": int(t), "denoised": den if den is not None else x}
