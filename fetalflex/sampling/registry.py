"""The samplers a request can name (``GenerationRequest.sampler``), by name.

Each entry adapts one sampler function to the one call the Engine makes: a
:class:`SamplingJob` in, sampler events out (:mod:`fetalflex.sampling.events`). Adding a
sampler is one function and one entry here; the Engine never branches on names. Repaint is
not here: it is the second phase of a pair or a reference repaint, not a choice of sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from torch import Tensor

from fetalflex.model.config import DenoiserConfig
from fetalflex.request import SamplerName
from fetalflex.sampling.ddim import ddim_scheduler, sample_ddim_progressive
from fetalflex.sampling.denoisers import Conditioning, X0Denoiser, predicting_x0, to_x0
from fetalflex.sampling.dpm_solver import dpmsolver_scheduler, sample_dpm_solver_progressive
from fetalflex.sampling.events import SamplerEvent, StopCheck
from fetalflex.sampling.steps import SampleNoise
from fetalflex.sampling.two_stage import TwoStageOptions, two_stage_progressive


@dataclass(frozen=True)
class SamplingJob:
    """One batch to sample: its conditioning, its starting noise and the request's knobs."""

    conditioning: Conditioning  # the batch's guided denoisers
    x: Tensor                   # x_T, (N, 1, H, W): each sample's first draw from its stream
    noise: SampleNoise          # the samples' own noise streams (for samplers that re-noise)
    cfg: DenoiserConfig         # the model's noise schedule and parameterization
    ac: Tensor                  # alphas_cumprod of ``cfg``
    steps: int
    guidance: float
    control_scale: float
    should_stop: StopCheck | None = None


Sampler = Callable[[SamplingJob], Iterator[SamplerEvent]]


def _ddim(job: SamplingJob) -> Iterator[SamplerEvent]:
    den = job.conditioning(None, job.guidance, job.control_scale)
    return sample_ddim_progressive(den, job.x, ddim_scheduler(job.cfg), job.steps,
                                   should_stop=job.should_stop)


def _dpm_solver(job: SamplingJob) -> Iterator[SamplerEvent]:
    den = job.conditioning(None, job.guidance, job.control_scale)
    return sample_dpm_solver_progressive(
        den, job.x, dpmsolver_scheduler(job.cfg), job.steps,
        preview=to_x0(job.ac, job.cfg.prediction_type), should_stop=job.should_stop)


def _two_stage(job: SamplingJob) -> Iterator[SamplerEvent]:
    """Its own steps and guidance per stage (``TwoStageOptions``; for weights with guidance
    folded in, ``TwoStageOptions.folded`` on their own step count); the request's control
    scale scales both stages' control."""

    def make(indices: Tensor, guidance: float, control: float) -> X0Denoiser:
        den = job.conditioning(indices, guidance, control * job.control_scale)
        return predicting_x0(den, job.ac, job.cfg.prediction_type)

    rec = job.cfg.sampling
    options = (TwoStageOptions.folded(rec.steps or job.steps) if rec.guidance_folded
               else TwoStageOptions())
    return two_stage_progressive(make, job.x, job.ac, options, job.noise, job.should_stop)


SAMPLERS: Final[Mapping[SamplerName, Sampler]] = MappingProxyType({
    "ddim": _ddim,
    "dpmsolver++": _dpm_solver,
    "two-stage": _two_stage,
})
