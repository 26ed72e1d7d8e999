from __future__ import annotations

import torch

from fetalflex.model.config import DenoiserConfig
from fetalflex.sampling.ddim import ddim_scheduler, sample_ddim, sample_ddim_progressive
from fetalflex.sampling.denoisers import CountingCall, guided
from fetalflex.sampling.events import Final, Step
from tests.conftest import TINY_MODEL


def _oracle(x0: torch.Tensor, cfg: DenoiserConfig):  # type: ignore[no-untyped-def]
    """A denoiser that knows the clean image: returns the exact v for x_t."""
    ac = ddim_scheduler(cfg).alphas_cumprod

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ac[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
        eps = (x_t - a * x0) / s
        return a * eps - s * x0

    return denoise


def test_ddim_with_oracle_recovers_the_image() -> None:
    cfg = DenoiserConfig(**TINY_MODEL)
    x0 = torch.rand(2, 1, 8, 8) * 1.6 - 0.8
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = sample_ddim(_oracle(x0, cfg), x, ddim_scheduler(cfg), 10)
    assert torch.allclose(out, x0, atol=1e-3)


def test_progressive_yields_every_step_with_previews() -> None:
    cfg = DenoiserConfig(**TINY_MODEL)
    x0 = torch.zeros(1, 1, 8, 8)
    events = list(sample_ddim_progressive(_oracle(x0, cfg), torch.randn(1, 1, 8, 8),
                                          ddim_scheduler(cfg), 5))
    steps, last = events[:-1], events[-1]
    assert all(isinstance(e, Step) for e in steps) and isinstance(last, Final)
    assert [e.i for e in steps] == [0, 1, 2, 3, 4] and last.calls == 5
    ts = [e.t for e in steps]
    assert ts == sorted(ts, reverse=True) and ts[0] == 999
    assert torch.allclose(steps[0].denoised, x0, atol=1e-3)
    assert torch.equal(last.x, steps[-1].x)


def test_guidance_is_one_batched_call_per_step() -> None:
    seen: list[int] = []

    def call(x, t, layout, cond, cs):  # type: ignore[no-untyped-def]
        seen.append(x.shape[0])
        # cond half returns 1, uncond half returns 0 -> guided result is w
        return (cs > 0).float().view(-1, 1, 1, 1).expand_as(x).clone()

    counted = CountingCall(call)
    layout = torch.ones(3, 35, 4, 4)
    d = guided(counted, layout, torch.zeros(3, 10), guidance=2.5)
    out = d(torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long))
    assert seen == [6] and counted.calls == 1
    assert torch.allclose(out, torch.full_like(out, 2.5))
