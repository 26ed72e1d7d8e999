"""Samplers converge as steps grow, and training and sampling agree on every convention.

The v1 weights got *worse* with more sampling steps under guidance. These tests pin the
two things that must hold for that not to happen again:

* on a problem whose exact denoiser is known (Gaussian data), every sampler's output
  distribution approaches the data as steps grow, with and without guidance;
* training, the diffusers schedulers and our per-sample step math use one noise schedule,
  one timestep grid, one v/eps/x0 conversion, and one unconditional input.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import condition_vector, drop_condition
from fetalflex.model.diffusion import (
    add_noise,
    alphas_cumprod_for,
    loss_weight,
    predict_x0,
    target,
    train_scheduler,
)
from fetalflex.sampling.ddim import ddim_scheduler, sample_ddim
from fetalflex.sampling.denoisers import guided
from fetalflex.sampling.dpm_solver import dpmsolver_scheduler, sample_dpm_solver_progressive
from fetalflex.sampling.events import final
from fetalflex.sampling.schedules import trailing_timesteps
from fetalflex.sampling.steps import split_output
from tests.conftest import TINY_MODEL

CFG = DenoiserConfig(**TINY_MODEL)
AC = alphas_cumprod_for(CFG)


def gaussian_v(mu: float, sd: float):  # type: ignore[no-untyped-def]
    """The exact v-prediction for data x0 ~ N(mu, sd^2) per pixel (posterior mean)."""
    def v(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = AC[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - AC[t]).sqrt().view(-1, 1, 1, 1)
        x0 = mu + a * sd**2 / (a**2 * sd**2 + s**2) * (x_t - a * mu)
        return (a * x_t - x0) / s.clamp(min=1e-8)
    return v


def _moments_error(sampler: str, steps: int, mu: float, sd: float,
                   denoise=None) -> float:  # type: ignore[no-untyped-def]
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    den = denoise or gaussian_v(mu, sd)
    if sampler == "ddim":
        out = sample_ddim(den, x, ddim_scheduler(CFG), steps)
    else:
        out = final(sample_dpm_solver_progressive(den, x, dpmsolver_scheduler(CFG), steps)).x
    return abs(float(out.mean()) - mu) + abs(float(out.std()) - sd)


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
def test_exact_denoiser_converges_as_steps_grow(sampler: str) -> None:
    errs = [_moments_error(sampler, n, -0.3, 0.25) for n in (5, 10, 25, 50, 100)]
    # Never worse with more steps (small slack for sampling noise), and close at the end.
    for a, b in itertools.pairwise(errs):
        assert b <= a + 0.01, errs
    assert errs[-1] < 0.02, errs


@pytest.mark.parametrize("mu", [-0.3, -0.85])
def test_guided_sampling_converges_to_the_guided_target(mu: float) -> None:
    """Guidance mixes two exact denoisers; with w = 1 the result is the conditional data,
    and with w > 1 more steps still converge (no drift from the extra steps). With data
    near black (mu = -0.85, like fluid) guidance pushes x0 past -1 and DDIM clips it: this
    is the case that drifted in v1, when eps was not recomputed from the clipped x0."""
    cond_v, uncond_v = gaussian_v(mu, 0.1), gaussian_v(0.0, 0.5)

    def call(x, t, layout, cond, cs):  # type: ignore[no-untyped-def]
        is_cond = cs > 0  # guided() puts the unconditional half at control scale 0
        return torch.where(is_cond.view(-1, 1, 1, 1), cond_v(x, t), uncond_v(x, t))

    layout = torch.ones(64, 3, 16, 16)
    cond = torch.zeros(64, CFG.cond_dim)
    den1 = guided(call, layout, cond, guidance=1.0)
    assert _moments_error("ddim", 50, mu, 0.1, den1) < 0.02
    den2 = guided(call, layout, cond, guidance=2.0)
    x = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    outs = [sample_ddim(den2, x, ddim_scheduler(CFG), n) for n in (10, 25, 50, 100, 200)]
    # The guided ODE has a limit: successive refinements move less and less (no drift).
    moves = [float((b - a).abs().mean()) for a, b in itertools.pairwise(outs)]
    for a, b in itertools.pairwise(moves):
        assert b <= a + 1e-6, moves
    assert max(moves) < 0.15 and moves[-1] < 0.01, moves


def test_guidance_one_skips_the_unconditional_half() -> None:
    seen: list[int] = []

    def call(x, t, layout, cond, cs):  # type: ignore[no-untyped-def]
        seen.append(x.shape[0])
        return torch.zeros_like(x)

    den = guided(call, torch.ones(3, 4, 8, 8), torch.zeros(3, CFG.cond_dim), guidance=1.0)
    den(torch.zeros(3, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    assert seen == [3]


def test_guidance_unconditional_half_is_what_training_drops_to() -> None:
    """The input of guidance's unconditional row == drop_condition() == training's dropped
    sample (the v1 defect: trained with control on, sampled with control off)."""
    got: dict[str, torch.Tensor] = {}

    def call(x, t, layout, cond, cs):  # type: ignore[no-untyped-def]
        got.update(layout=layout, cond=cond, cs=cs)
        return torch.zeros_like(x)

    n = 2
    layout = torch.rand(n, 5, 8, 8)
    cond = condition_vector(torch.tensor([3, 3]), torch.tensor([25.0, float("nan")]),
                            CFG.num_planes)
    guided(call, layout, cond, guidance=2.0, control_scale=1.5)(
        torch.zeros(n, 1, 8, 8), torch.zeros(n, dtype=torch.long))
    nl, nc, ns = drop_condition(layout, cond, torch.full((n,), 1.5),
                                torch.ones(n, dtype=torch.bool), CFG.num_planes)
    assert torch.equal(got["layout"][n:], nl) and torch.equal(got["cond"][n:], nc)
    assert torch.equal(got["cs"][n:], ns) and float(ns.abs().sum()) == 0.0
    assert torch.equal(got["layout"][:n], layout) and torch.equal(got["cs"][:n],
                                                                  torch.full((n,), 1.5))


def test_training_drops_conditions_to_the_same_input(monkeypatch: pytest.MonkeyPatch) -> None:
    from fetalflex.training import train as train_mod
    from fetalflex.training.config import TrainConfig

    seen: list[torch.Tensor] = []
    real = train_mod.drop_condition

    def spy(layout, cond, scale, drop, num_planes):  # type: ignore[no-untyped-def]
        out = real(layout, cond, scale, drop, num_planes)
        seen.append(drop)
        return out

    monkeypatch.setattr(train_mod, "drop_condition", spy)
    cfg = TrainConfig(model=CFG, drop_condition_prob=1.0, precision="fp32")

    class Model(torch.nn.Module):
        def forward(self, x, t, layout, cond, cs):  # type: ignore[no-untyped-def]
            assert float(layout.abs().sum()) == 0 and float(cs.abs().sum()) == 0
            assert bool((cond[:, CFG.num_planes] == 1).all())  # the null plane flag
            return torch.zeros_like(x, requires_grad=True)

    batch = {"image": torch.zeros(2, 1, 32, 32), "layout": torch.ones(2, 35, 32, 32),
             "plane": torch.tensor([0, 1]), "ga": torch.tensor([20.0, 30.0])}
    train_mod._stage_loss(Model(), "control", batch, cfg, AC,  # type: ignore[arg-type]
                          torch.Generator().manual_seed(0))
    assert seen and bool(seen[0].all())


def test_one_noise_schedule_everywhere() -> None:
    for sched in (train_scheduler(CFG), ddim_scheduler(CFG), dpmsolver_scheduler(CFG)):
        assert torch.allclose(sched.alphas_cumprod.float(), AC.float())
        assert sched.config.prediction_type == CFG.prediction_type
        assert sched.config.num_train_timesteps == CFG.num_train_timesteps


@pytest.mark.parametrize("steps", [1, 5, 10, 25, 50, 100])
def test_one_timestep_grid(steps: int) -> None:
    ddim = ddim_scheduler(CFG)
    ddim.set_timesteps(steps)
    assert ddim.timesteps.tolist() == trailing_timesteps(CFG.num_train_timesteps, steps)
    dpm = dpmsolver_scheduler(CFG)
    dpm.set_timesteps(steps)
    assert dpm.timesteps.tolist()[0] == CFG.num_train_timesteps - 1


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_one_parameterisation(prediction_type: str) -> None:
    """target() (training), predict_x0 (training helpers), split_output (our samplers) and
    diffusers' DDIM step all recover the same x0 from the same model output."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 1.6 - 0.8
    eps = torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 250, 600, 999])
    x_t = add_noise(AC, x0, eps, t)
    out = target(prediction_type, AC, x0, eps, t)
    mid = slice(1, 3)  # away from the ends, where x0 is ill-conditioned for epsilon
    assert torch.allclose(predict_x0(prediction_type, AC, x_t, out, t)[mid], x0[mid],
                          atol=1e-4)
    x0b, epsb = split_output(out, x_t, t, AC, prediction_type, clip=False)
    assert torch.allclose(x0b[mid], x0[mid], atol=1e-4)
    assert torch.allclose(epsb[mid], eps[mid], atol=1e-3)
    cfg = CFG.model_copy(update={"prediction_type": prediction_type})
    sched = ddim_scheduler(cfg)
    sched.set_timesteps(4)
    tt = int(sched.timesteps[2])
    t2 = torch.full((4,), tt)
    res = sched.step(target(prediction_type, AC, x0, eps, t2), tt, add_noise(AC, x0, eps, t2))
    assert torch.allclose(res.pred_original_sample, x0, atol=1e-4)


def test_min_snr_weight() -> None:
    t = torch.tensor([0, 500, 999])
    w = loss_weight("v_prediction", AC, t, 5.0)
    snr = AC[t] / (1 - AC[t])
    assert torch.allclose(w, snr.clamp(max=5.0) / (snr + 1))
    assert float(w[0]) < 5.0 / float(snr[0])  # low-noise steps are down-weighted
    assert float(w.min()) > 0 and float(w.max()) <= 1.0


def test_min_snr_plus_one_weighs_the_noisiest_steps() -> None:
    t = torch.tensor([0, 500, 999])
    snr = AC[t] / (1 - AC[t])
    plain = loss_weight("v_prediction", AC, t, 5.0)
    plus = loss_weight("v_prediction", AC, t, 5.0, plus_one=True)
    assert torch.allclose(plus, (snr + 1).clamp(max=5.0) / (snr + 1))
    assert float(plain[2]) < 1e-3 < 0.99 < float(plus[2])  # t = T: ~0 before, ~1 now
    assert torch.allclose(plus[0], plain[0])  # low-noise steps: the same cap


def test_min_snr_plus_one_is_refused_for_an_epsilon_model() -> None:
    import pytest

    from fetalflex.model.config import DenoiserConfig
    from fetalflex.training.config import StageConfig, TrainConfig

    stages = {k: StageConfig(steps=1) for k in ("base", "prealign", "control")}
    with pytest.raises(ValueError, match="min_snr_plus_one needs"):
        TrainConfig(model=DenoiserConfig(prediction_type="epsilon"),
                    loss_weighting="min_snr_plus_one", **stages)
    TrainConfig(model=DenoiserConfig(), loss_weighting="min_snr_plus_one", **stages)
