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
    """DDIM (Song et al. 2021) on the training schedule, trailing timesteps, x0 clipped to
    the image range. Step it with ``use_clipped_model_output=True`` (as
    :func:`sample_ddim_progressive` does): the noise estimate must be recomputed from the
    clipped x0, or every clipped step moves the sample off the line through x0 and eps."""
    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type, clip_sample=True, clip_sample_range=1.0,
        set_alpha_to_one=True, timestep_spacing="trailing",
    )


def sample_ddim_progressive(
    denoise: Denoiser, x: Tensor, scheduler: DDIMScheduler, steps: int, *, eta: float = 0.0,
    generator: torch.Generator | None = None, should_stop: Callable[[], bool] | None = None,
) -> Iterator[Event]:
    # use_clipped_model_output: diffusers clips x0 to [-1, 1] but by default keeps the
    # unclipped eps, so x_{t-1} = a' clip(x0) + s' eps mixes two different images. Where x0
    # overshoots (guidance extrapolates past black fluid and bright bone) each step pushes
    # the sample brighter, and more steps push more: the v1 drift (fluid 25 -> 90 grey
    # levels from DDIM-10 to DDIM-50, docs/EVALUATION.md). Our own per-sample steps
    # (steps.split_output) already recompute eps from the clipped x0.
    return sample_scheduler_progressive(
        denoise, x, scheduler, steps, should_stop=should_stop,
        step_kwargs={"eta": eta, "generator": generator, "use_clipped_model_output": True})


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
    step_kwargs: dict[str, Any] | None = None,
) -> Iterator[Event]:
    """Any diffusers scheduler over a denoiser, one event per step (the one sampling loop).

    ``denoised`` is the scheduler's own x0 prediction when it reports one (DDIM), else
    ``preview(out, x_t, t)`` (DPM-Solver++), else the current sample."""
    if steps < 1:
        raise ValueError(f"steps: must be at least 1, got {steps}")
    scheduler.set_timesteps(steps)
    n = x.shape[0]
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise InterruptedError("sampling cancelled")
        tt = torch.full((n,), int(t), dtype=torch.long)
        out = denoise(x, tt)
        res = scheduler.step(out, t, x, **(step_kwargs or {}))
        den = getattr(res, "pred_original_sample", None)
        if den is None and preview is not None:
            den = preview(out, x, tt)
        x = res.prev_sample
        yield {"x": x, "i": i, "t": int(t), "denoised": den if den is not None else x}
