"""Any diffusers scheduler over a denoiser: the one loop of DDIM and DPM-Solver++.

One :class:`~fetalflex.sampling.events.Step` per denoiser call, then the
:class:`~fetalflex.sampling.events.Final`. The scheduler takes the model's own prediction
(v or eps), as diffusers' schedulers do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from diffusers import SchedulerMixin
from torch import Tensor

from fetalflex.errors import InvalidRequestError
from fetalflex.sampling.denoisers import Denoiser, ToX0
from fetalflex.sampling.events import Final, SamplerEvent, Step, StopCheck, check_stop


def sample_scheduler_progressive(
    denoise: Denoiser, x: Tensor, scheduler: SchedulerMixin, steps: int, *,
    preview: ToX0 | None = None, should_stop: StopCheck | None = None,
    step_kwargs: dict[str, Any] | None = None,
) -> Iterator[SamplerEvent]:
    """``steps`` scheduler steps from ``x`` (pure noise), one denoiser call each.

    A step's ``denoised`` is the scheduler's own x0 prediction when it reports one (DDIM),
    else ``preview(out, x_t, t)`` (DPM-Solver++), else the current sample."""
    if steps < 1:
        raise InvalidRequestError("steps", f"must be at least 1, got {steps}")
    scheduler.set_timesteps(steps)
    n = x.shape[0]
    calls = 0
    for i, t in enumerate(scheduler.timesteps):
        check_stop(should_stop)
        tt = torch.full((n,), int(t), dtype=torch.long)
        out = denoise(x, tt)
        calls += 1
        res = scheduler.step(out, t, x, **(step_kwargs or {}))
        den = getattr(res, "pred_original_sample", None)
        if den is None and preview is not None:
            den = preview(out, x, tt)
        x = res.prev_sample
        yield Step(i, int(t), x, den if den is not None else x)
    yield Final(x, calls)
