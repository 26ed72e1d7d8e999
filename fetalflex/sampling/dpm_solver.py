"""DPM-Solver++ (2M), Lu et al. 2022, via diffusers, over a denoiser callable."""

from __future__ import annotations

from collections.abc import Iterator

from diffusers import DPMSolverMultistepScheduler
from torch import Tensor

from fetalflex.model.config import DenoiserConfig
from fetalflex.sampling.denoisers import Denoiser, ToX0
from fetalflex.sampling.events import SamplerEvent, StopCheck
from fetalflex.sampling.scheduler import sample_scheduler_progressive


def dpmsolver_scheduler(cfg: DenoiserConfig) -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (2M) on the training schedule, trailing timesteps, ending at sigma 0."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type, algorithm_type="dpmsolver++", solver_order=2,
        timestep_spacing="trailing", final_sigmas_type="zero", lower_order_final=True,
    )


def sample_dpm_solver_progressive(
    denoise: Denoiser, x: Tensor, scheduler: DPMSolverMultistepScheduler, steps: int, *,
    preview: ToX0 | None = None, should_stop: StopCheck | None = None,
) -> Iterator[SamplerEvent]:
    """The sampler events of DPM-Solver++; the scheduler reports no x0, so a step's
    preview is ``preview(out, x_t, t)`` (:func:`~fetalflex.sampling.denoisers.to_x0`)."""
    return sample_scheduler_progressive(denoise, x, scheduler, steps, preview=preview,
                                        should_stop=should_stop)
