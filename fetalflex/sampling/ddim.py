"""The DDIM sampler as a function over a denoiser callable (diffusers' DDIMScheduler math).

``sample_ddim_progressive`` yields the sampler events (:mod:`fetalflex.sampling.events`);
``sample_ddim`` returns the final image. Both share one loop
(:mod:`fetalflex.sampling.scheduler`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from fetalflex.model.config import DenoiserConfig
from fetalflex.sampling.denoisers import Denoiser
from fetalflex.sampling.events import SamplerEvent, Step, StopCheck, final
from fetalflex.sampling.scheduler import sample_scheduler_progressive


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
    generator: torch.Generator | None = None, should_stop: StopCheck | None = None,
) -> Iterator[SamplerEvent]:
    # use_clipped_model_output: diffusers clips x0 to [-1, 1] but by default keeps the
    # unclipped eps, so x_{t-1} = a' clip(x0) + s' eps mixes two different images. Where x0
    # overshoots (guidance extrapolates past black fluid and bright bone) each step pushes
    # the sample brighter, and more steps push more: the v1 drift (fluid 25 -> 90 grey
    # levels from DDIM-10 to DDIM-50, docs/EVALUATION.md). Our own per-sample steps
    # (steps.ddim_to) already recompute eps from the clipped x0.
    return sample_scheduler_progressive(
        denoise, x, scheduler, steps, should_stop=should_stop,
        step_kwargs={"eta": eta, "generator": generator, "use_clipped_model_output": True})


def sample_ddim(denoise: Denoiser, x: Tensor, scheduler: DDIMScheduler, steps: int, *,
                eta: float = 0.0, generator: torch.Generator | None = None,
                callback: Callable[[Step], None] | None = None) -> Tensor:
    return final(sample_ddim_progressive(denoise, x, scheduler, steps, eta=eta,
                                         generator=generator), callback).x
