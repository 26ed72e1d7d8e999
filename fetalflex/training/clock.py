"""The clock of training budgets and deadlines: one seam, so that tests of budgeted
training never depend on how fast or busy the machine is.

Production reads ``time.monotonic``. A test sets a ``TickClock`` (``use``), or, for a
training run in a child process, the environment variable ``FETALFLEX_CLOCK_TICK`` (seconds
the clock advances per reading): the budget's arithmetic and the deadline then follow the
readings, not the wall clock. Step rates stay real measurements (``time.perf_counter``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

TICK_ENV = "FETALFLEX_CLOCK_TICK"


class TickClock:
    """A clock that advances ``tick`` seconds per reading."""

    def __init__(self, tick: float, start: float = 0.0) -> None:
        self.tick, self.t = tick, start

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def _from_env() -> Callable[[], float]:
    tick = os.environ.get(TICK_ENV)
    return TickClock(float(tick)) if tick else time.monotonic


_clock: Callable[[], float] = _from_env()


def now() -> float:
    """Seconds on the budget's clock (``time.monotonic`` unless a test chose another)."""
    return _clock()


def use(clock: Callable[[], float] | None) -> None:
    """Use ``clock`` from now on (None: back to the environment's / the real one)."""
    global _clock
    _clock = clock if clock is not None else _from_env()
