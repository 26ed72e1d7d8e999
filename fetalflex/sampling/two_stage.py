"""Two-stage adaptive coarse-to-fine sampling (FetalFlex), as we read it.

Stage 1 (coarse, structure): DDIM on a trailing grid of at most ``stage1_max_steps``
steps with strong anatomy control (``stage1_control``, ``stage1_guidance``). After each
step the relative change of the x0 preview, ``||x0_k - x0_{k-1}|| / ||x0_{k-1}||``, is
the sampler's own convergence signal; once it stays under ``tolerance`` for ``patience``
steps (and at least ``stage1_min_steps`` ran) the structure is fixed and stage 1 stops
*for that sample*.

Stage 2 (fine, texture): the stage-1 estimate is re-noised to an intermediate level and
denoised again with weaker control (``stage2_control``, ``stage2_guidance``), so speckle
and texture come from the image prior. Its strength (the re-noising level as a fraction
of the diffusion) is chosen per sample from the estimate itself: the smoother the
stage-1 estimate (less high-frequency energy than ``texture_target``), the more it is
re-noised, between ``strength_min`` and ``strength_max``; the number of stage-2 steps
scales with the strength.

Every knob is a named field of :class:`TwoStageOptions` with its default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from fetalflex.sampling.denoisers import X0Denoiser
from fetalflex.sampling.events import Final, Report, SamplerEvent, Step, StopCheck, check_stop
from fetalflex.sampling.schedules import trailing_timesteps
from fetalflex.sampling.steps import SampleNoise, ddim_to, noise_to

X0Factory = Callable[[Tensor, float, float], X0Denoiser]
"""(sample indices, guidance, control scale) -> x0 denoiser over those samples."""


@dataclass(frozen=True)
class TwoStageOptions:
    stage1_max_steps: int = 16       # cap: the coarse grid of stage 1
    stage1_min_steps: int = 4
    tolerance: float = 0.03          # relative x0-preview change that counts as "fixed"
    patience: int = 2                # consecutive steps under tolerance
    stage1_guidance: float = 2.5
    stage1_control: float = 1.0
    stage2_guidance: float = 1.5
    stage2_control: float = 0.7
    strength_min: float = 0.15       # re-noising level of stage 2, fraction of T
    strength_max: float = 0.40
    stage2_steps_at_max: int = 8
    stage2_min_steps: int = 2
    texture_target: float = 0.10     # high-frequency sd of x0 that needs no extra texture

    @classmethod
    def folded(cls, steps: int) -> TwoStageOptions:
        """For weights with guidance folded in (a distilled student of ``steps`` steps):
        stage 1 on the student's own grid (it may stop one step early once its x0 preview
        holds), stage 2 one or two unguided steps from the re-noised estimate; both at
        guidance 1 (guiding a student again would over-guide it). The control scales stay:
        they are inputs of the weights, not of guidance."""
        return cls(stage1_max_steps=steps, stage1_min_steps=max(1, steps - 1), patience=1,
                   stage1_guidance=1.0, stage2_guidance=1.0,
                   stage2_steps_at_max=max(1, steps // 2), stage2_min_steps=1)


def high_frequency(x0: Tensor) -> Tensor:
    """Per-sample sd of x0 minus its 3x3 box blur (speckle energy), shape (N,)."""
    blur = torch.nn.functional.avg_pool2d(x0, 3, stride=1, padding=1, count_include_pad=False)
    return (x0 - blur).flatten(1).std(dim=1)


def stage2_strength(x0: Tensor, o: TwoStageOptions) -> Tensor:
    deficit = ((o.texture_target - high_frequency(x0)) / o.texture_target).clamp(0.0, 1.0)
    return o.strength_min + (o.strength_max - o.strength_min) * deficit


def two_stage_progressive(
    make_denoiser: X0Factory, x: Tensor, ac: Tensor,
    options: TwoStageOptions = TwoStageOptions(), noise: SampleNoise | None = None,
    should_stop: StopCheck | None = None,
) -> Iterator[SamplerEvent]:
    """One step per denoiser call (``stage`` 1 or 2; a call runs the samples still in that
    stage, or one group of equal stage-2 schedules), then the images and each sample's
    :class:`~fetalflex.sampling.events.Report` (switch step, stage-2 strength and steps)."""
    o = options
    n = x.shape[0]
    noise = noise or SampleNoise(list(range(n)))
    T = len(ac)
    grid = trailing_timesteps(T, o.stage1_max_steps)
    x = x.clone()
    x0_est = torch.zeros_like(x)
    prev: list[Tensor | None] = [None] * n
    calm = [0] * n
    switch_step = [len(grid)] * n
    active = list(range(n))
    calls = 0
    for k, t in enumerate(grid):
        if not active:
            break
        check_stop(should_stop)
        idx = torch.tensor(active)
        t_cur = torch.full((len(active),), t, dtype=torch.long)
        t_next = torch.full((len(active),), grid[k + 1] if k + 1 < len(grid) else -1,
                            dtype=torch.long)
        xa = x[idx]
        x0 = make_denoiser(idx, o.stage1_guidance, o.stage1_control)(xa, t_cur)
        x[idx] = ddim_to(x0, xa, t_cur, t_next, ac)
        x0_est[idx] = x0
        calls += 1
        yield Step(calls - 1, t, x, x0_est, stage=1)
        still = []
        for j, s in enumerate(active):
            p = prev[s]
            if p is not None:
                change = float((x0[j] - p).norm() / (p.norm() + 1e-8))
                calm[s] = calm[s] + 1 if change < o.tolerance else 0
            prev[s] = x0[j].clone()
            if k + 1 >= o.stage1_min_steps and calm[s] >= o.patience:
                switch_step[s] = k + 1
            else:
                still.append(s)
        active = still
    # Stage 2, grouped by identical schedules so each group shares one call per step.
    strength = stage2_strength(x0_est, o)
    plans: dict[tuple[int, int], list[int]] = {}
    for s in range(n):
        st = float(strength[s])
        t2 = max(1, round(st * T) - 1)
        steps2 = max(o.stage2_min_steps,
                     math.ceil(o.stage2_steps_at_max * st / o.strength_max))
        plans.setdefault((t2, steps2), []).append(s)
    out_x = x0_est.clone()
    for (t2, steps2), members in plans.items():
        idx = torch.tensor(members)
        g2 = trailing_timesteps(T, steps2, start=t2)
        xs = noise_to(x0_est[idx], ac, torch.full((len(members),), t2, dtype=torch.long),
                      noise(x0_est[idx].shape, members))
        den = make_denoiser(idx, o.stage2_guidance, o.stage2_control)
        for k, t in enumerate(g2):
            check_stop(should_stop)
            t_cur = torch.full((len(members),), t, dtype=torch.long)
            t_next = torch.full((len(members),), g2[k + 1] if k + 1 < len(g2) else -1,
                                dtype=torch.long)
            x0 = den(xs, t_cur)
            xs = ddim_to(x0, xs, t_cur, t_next, ac)
            calls += 1
            preview = out_x.clone()
            preview[idx] = x0
            yield Step(calls - 1, t, preview, preview, stage=2)
        out_x[idx] = xs
    reports: list[Report] = [
        {"stage1_steps": switch_step[s], "stage2_strength": round(float(strength[s]), 4),
         "stage2_steps": next(k[1] for k, m in plans.items() if s in m)}
        for s in range(n)]
    yield Final(out_x, calls, tuple(reports))
