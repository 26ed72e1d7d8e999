"""Admission control: a bound on work running and on work waiting for a slot.

A shed request raises ``OverloadedError``; the servicer's guard counts it (once) in
``fetalflex_requests_rejected_total{reason="overloaded"}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from service.errors import OverloadedError
from service.metrics import IN_FLIGHT, QUEUED


class Admission:
    def __init__(self, max_concurrent: int, max_queued: int, what: str = "generations",
                 gauges: bool = True) -> None:
        """``gauges``: report running/queued on the generation gauges (one admission only
        may; the others are bounds without gauges of their own)."""
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.what = what
        self.gauges = gauges
        self._sem = asyncio.Semaphore(max_concurrent)
        self.running = 0
        self.queued = 0

    def _report(self) -> None:
        if self.gauges:
            QUEUED.set(self.queued)
            IN_FLIGHT.set(self.running)

    async def acquire(self) -> Callable[[], None]:
        """Wait for a slot (or shed); returns its release, which may be called more than
        once and from a done callback: a worker thread's slot is freed when the worker
        ends, not when its RPC handler is cancelled."""
        if self.running >= self.max_concurrent and self.queued >= self.max_queued:
            raise OverloadedError(f"overloaded: {self.running} {self.what} running and "
                                  f"{self.queued} queued (limits {self.max_concurrent}/"
                                  f"{self.max_queued}); retry later")
        self.queued += 1
        self._report()
        try:
            await self._sem.acquire()
        finally:
            self.queued -= 1
            self._report()
        self.running += 1
        self._report()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.running -= 1
                self._report()
                self._sem.release()

        return release

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        release = await self.acquire()
        try:
            yield
        finally:
            release()
