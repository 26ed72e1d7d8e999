"""What every sampler yields: one :class:`Step` per denoiser call, then one :class:`Final`.

The one event shape for DDIM, DPM-Solver++, repaint and two-stage: a consumer (the Engine,
a progress bar, a stream of previews) never asks which sampler ran. Samplers check
``should_stop`` before every denoiser call and raise
:class:`~fetalflex.errors.SamplingCancelledError` when it says stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor

from fetalflex.errors import SamplingCancelledError

StopCheck = Callable[[], bool]
"""Asked before every denoiser call; True stops the sampler (cancellation, deadline)."""

Report = dict[str, float]
"""What a sampler chose for one sample (two-stage: its switch step and stage-2 strength)."""


@dataclass(frozen=True)
class Step:
    """One denoiser call of a sampler."""

    i: int             # the call's index in this run (0-based; calls so far = i + 1)
    t: int             # the timestep it ran at
    x: Tensor          # the batch after the call (N, 1, H, W)
    denoised: Tensor   # the x0 preview of the batch (N, 1, H, W)
    stage: int = 0     # two-stage: 1 (structure) or 2 (texture); 0 for one-stage samplers

    @property
    def calls(self) -> int:
        return self.i + 1


@dataclass(frozen=True)
class Final:
    """The sampler's result: the images in the model's range and the calls it made."""

    x: Tensor                        # (N, 1, H, W)
    calls: int
    reports: tuple[Report, ...] = ()  # one per sample, from samplers that choose per sample


SamplerEvent = Step | Final


def check_stop(should_stop: StopCheck | None) -> None:
    """Raise :class:`SamplingCancelledError` when ``should_stop`` says stop."""
    if should_stop is not None and should_stop():
        raise SamplingCancelledError("sampling cancelled")


def final(events: Iterable[SamplerEvent],
          on_step: Callable[[Step], None] | None = None) -> Final:
    """Run a sampler to its :class:`Final` event, handing each step to ``on_step``."""
    for ev in events:
        if isinstance(ev, Final):
            return ev
        if on_step is not None:
            on_step(ev)
    raise RuntimeError("the sampler ended without a Final event")
