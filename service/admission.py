"""Admission control: a bound on running generations and on those waiting for a slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.errors import OverloadedError
from service.metrics import IN_FLIGHT, QUEUED, REJECTED_TOTAL


class Admission:
    def __init__(self, max_concurrent: int, max_queued: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._sem = asyncio.Semaphore(max_concurrent)
        self.running = 0
        self.queued = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running >= self.max_concurrent and self.queued >= self.max_queued:
            REJECTED_TOTAL.labels("overloaded").inc()
            raise OverloadedError(f"overloaded: {self.running} generations running and "
                                  f"{self.queued} queued (limits {self.max_concurrent}/"
                                  f"{self.max_queued}); retry later")
        self.queued += 1
        QUEUED.set(self.queued)
        try:
            await self._sem.acquire()
        finally:
            self.queued -= 1
            QUEUED.set(self.queued)
        self.running += 1
        IN_FLIGHT.set(self.running)
        try:
            yield
        finally:
            self.running -= 1
            IN_FLIGHT.set(self.running)
            self._sem.release()
