"""Every sampler speaks one event shape: Steps, then its own Final; cancellation is named.

A fake model call that knows the clean image (the exact v for a constant x0) stands in for
the network, so the samplers run in milliseconds and their previews can be checked."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from fetalflex.errors import InvalidRequestError, SamplingCancelledError
from fetalflex.model.config import DenoiserConfig, SamplingDefaults
from fetalflex.model.diffusion import alphas_cumprod_for
from fetalflex.request import SAMPLER_NAMES, RepaintSettings
from fetalflex.sampling.denoisers import (
    CountingCall,
    conditioning,
    guided,
    predicting_x0,
    to_x0,
)
from fetalflex.sampling.events import Final, SamplerEvent, Step, final
from fetalflex.sampling.registry import SAMPLERS, SamplingJob
from fetalflex.sampling.repaint import repaint_progressive
from fetalflex.sampling.schedules import count_calls, repaint_transitions, trailing_timesteps
from fetalflex.sampling.steps import SampleNoise, split_output
from fetalflex.sampling.two_stage import TwoStageOptions
from tests.conftest import TINY_MODEL

CFG = DenoiserConfig(**TINY_MODEL)
AC = alphas_cumprod_for(CFG)
N, SIDE = 3, 8
X0 = torch.linspace(-0.6, 0.6, N * SIDE * SIDE).view(N, 1, SIDE, SIDE)


def oracle_call(x0: Tensor) -> CountingCall:
    """A model call returning the exact v for clean images ``x0`` (tiled over the batch:
    guidance doubles it, two-stage calls subsets, whose x0 this call cannot know; the
    previews are checked only where the batch is whole)."""

    def call(x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor, cs: Tensor) -> Tensor:
        target = x0.repeat(-(-x_t.shape[0] // x0.shape[0]), 1, 1, 1)[:x_t.shape[0]]
        a = AC[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - AC[t]).sqrt().view(-1, 1, 1, 1)
        return a * ((x_t - a * target) / s) - s * target

    return CountingCall(call)


def _job(call: CountingCall, steps: int = 4,
         should_stop: Callable[[], bool] | None = None) -> SamplingJob:
    noise = SampleNoise(list(range(N)))
    layout, cond = torch.ones(N, 3, SIDE, SIDE), torch.zeros(N, CFG.cond_dim)
    return SamplingJob(conditioning(call, layout, cond), noise((N, 1, SIDE, SIDE)), noise,
                       CFG, AC, steps, guidance=1.0, control_scale=1.0,
                       should_stop=should_stop)


def _repaint(call: CountingCall, should_stop: Callable[[], bool] | None = None
             ) -> Iterator[SamplerEvent]:
    den = predicting_x0(guided(call, torch.ones(N, 3, SIDE, SIDE), torch.zeros(N, CFG.cond_dim),
                               1.0), AC, CFG.prediction_type)
    mask = torch.zeros(N, 1, SIDE, SIDE)
    mask[..., 2:6, 2:6] = 1.0
    return repaint_progressive(den, torch.zeros(N, 1, SIDE, SIDE), mask, AC,
                               RepaintSettings(steps=4, jump_length=2, jump_n_sample=2),
                               SampleNoise([7, 8, 9]), should_stop)


RUNS: dict[str, Callable[[CountingCall, Callable[[], bool] | None], Iterator[SamplerEvent]]] = {
    **{name: (lambda c, stop, name=name: SAMPLERS[name](_job(c, should_stop=stop)))
       for name in SAMPLERS},
    "repaint": _repaint,
}


def test_the_registry_holds_every_sampler_a_request_can_name() -> None:
    assert tuple(SAMPLERS) == SAMPLER_NAMES


@pytest.mark.parametrize("name", list(RUNS))
def test_every_sampler_yields_steps_then_its_own_final(name: str) -> None:
    call = oracle_call(X0)
    events = list(RUNS[name](call, None))
    steps, last = events[:-1], events[-1]
    assert steps and all(isinstance(e, Step) for e in steps), [type(e) for e in events]
    assert isinstance(last, Final)
    assert [e.i for e in steps] == list(range(len(steps)))
    assert last.calls == len(steps) == call.calls == steps[-1].calls
    for e in steps:
        assert e.x.shape == e.denoised.shape == (N, 1, SIDE, SIDE)
        assert 0 <= e.t < CFG.num_train_timesteps
    assert last.x.shape == (N, 1, SIDE, SIDE)
    assert len(last.reports) == (N if name == "two-stage" else 0)
    if name in ("ddim", "dpmsolver++"):  # the exact denoiser: the image itself
        assert torch.allclose(steps[0].denoised, X0, atol=1e-4)
        assert torch.allclose(last.x, X0, atol=1e-3)
    if name == "repaint":
        assert last.calls == count_calls(repaint_transitions(
            trailing_timesteps(CFG.num_train_timesteps, 4), 2, 2))


@pytest.mark.parametrize("name", list(RUNS))
def test_cancellation_is_named_and_stops_before_the_next_call(name: str) -> None:
    call = oracle_call(X0)
    asked = {"n": 0}

    def stop() -> bool:
        asked["n"] += 1
        return asked["n"] > 2

    with pytest.raises(SamplingCancelledError):
        for _ in RUNS[name](call, stop):
            pass
    assert call.calls == 2


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_the_x0_wrapper_is_the_one_conversion(prediction_type: str) -> None:
    """predicting_x0 gives the clipped x0 of split_output (what the samplers stepped with
    before the wrapper existed); to_x0 is the same conversion for a model output."""
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(4, 1, 8, 8, generator=g) * 1.5
    out = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    want = split_output(out, x_t, t, AC, prediction_type)[0]
    got = predicting_x0(lambda _x, _t: out, AC, prediction_type)(x_t, t)
    assert torch.equal(got, want) and float(want.abs().max()) <= 1.0
    assert torch.equal(to_x0(AC, prediction_type)(out, x_t, t), want)


def test_final_runs_a_sampler_to_its_result() -> None:
    seen: list[int] = []
    fin = final(SAMPLERS["ddim"](_job(oracle_call(X0), steps=3)), lambda s: seen.append(s.i))
    assert seen == [0, 1, 2] and fin.calls == 3
    with pytest.raises(RuntimeError, match="without a Final event"):
        final(iter([]))


def test_sampler_arguments_are_checked_naming_the_argument() -> None:
    with pytest.raises(InvalidRequestError, match="^steps: must be at least 1, got 0"):
        trailing_timesteps(CFG.num_train_timesteps, 0)
    with pytest.raises(InvalidRequestError, match="^start: must be within"):
        trailing_timesteps(CFG.num_train_timesteps, 4, start=CFG.num_train_timesteps)
    with pytest.raises(InvalidRequestError, match="^jump_n_sample: must be at least 1"):
        repaint_transitions([3, 2, 1], 1, 0)
    for name in ("ddim", "dpmsolver++"):  # two-stage runs its own schedules
        with pytest.raises(InvalidRequestError, match="^steps: must be at least 1, got 0"):
            final(SAMPLERS[name](_job(oracle_call(X0), steps=0)))


def test_two_stage_runs_a_guidance_folded_student_unguided_on_its_own_grid() -> None:
    """A distilled student (``sampling.guidance_folded``) must not be guided again: every
    two-stage call is one conditional row per sample, stage 1 stays on its own K steps
    (it may stop one early) and stage 2 takes at most K / 2; the teacher's options guide."""
    folded = CFG.model_copy(update={"sampling": SamplingDefaults(
        steps=4, sampler="ddim", guidance=1.0, guidance_folded=True)})
    for cfg, guided_rows in ((CFG, True), (folded, False)):
        rows: list[int] = []
        exact = oracle_call(X0)

        def call(x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor, cs: Tensor,
                 exact: CountingCall = exact, rows: list[int] = rows) -> Tensor:
            rows.append(x_t.shape[0])
            return exact(x_t, t, layout, cond, cs)

        job = _job(CountingCall(call))
        fin = final(SAMPLERS["two-stage"](SamplingJob(
            job.conditioning, job.x, job.noise, cfg, AC, job.steps, guidance=1.0,
            control_scale=1.0)))
        assert any(r > N for r in rows) is guided_rows, rows
        if not guided_rows:
            assert all(3 <= r["stage1_steps"] <= 4 for r in fin.reports), fin.reports
            assert all(1 <= r["stage2_steps"] <= 2 for r in fin.reports), fin.reports
            assert len(rows) <= 4 + 2 * len({r["stage2_steps"] for r in fin.reports})
            assert TwoStageOptions.folded(4).stage1_guidance == 1.0
