"""The one guard every RPC handler runs under, and the record of one RPC.

``Guard``: an undecodable request is refused (INVALID_ARGUMENT), an exception becomes its
status (``errors.status_for``: bad input names its field; our bugs are INTERNAL with an
error id), cancellation is recorded, and the RPC's record (``CallRecord``) finishes once:
the duration metric, the rejection counter and one access-log line (method, code,
duration, error id; never payloads or identifiers). ``Stop`` is what a worker checks
between denoiser steps; ``abandon`` lets a cancelled RPC end at once while its worker's
outcome is still retrieved.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message

from service.decoding import Undecodable
from service.errors import Status, status_for
from service.metrics import REJECTED_TOTAL, REQUEST_SECONDS

ACCESS_LOG = logging.getLogger("fetalflex.service.access")
Req = TypeVar("Req", bound=Message)


class Stop:
    """Set by cancellation or a passed deadline; checked between denoiser steps."""

    def __init__(self, deadline: float | None) -> None:
        self.event = threading.Event()
        self.deadline = deadline
        self.reason = "cancelled"

    def __call__(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "deadline"
            return True
        return self.event.is_set()


@dataclass
class CallRecord:
    """One RPC's outcome: the duration metric, the rejection counter, the access log."""

    method: str
    t0: float = field(default_factory=time.perf_counter)
    code: grpc.StatusCode = grpc.StatusCode.OK
    error_id: str | None = None
    on_finish: Callable[[], None] | None = None

    def failed(self, exc: BaseException) -> Status:
        st = status_for(exc)
        self.code, self.error_id = st.code, st.error_id
        if st.reason != "internal":
            REJECTED_TOTAL.labels(st.reason).inc()
        return st

    def finish(self) -> None:
        seconds = time.perf_counter() - self.t0
        REQUEST_SECONDS.labels(self.method, self.code.name).observe(seconds)
        ACCESS_LOG.info("rpc method=%s code=%s duration_ms=%.1f%s", self.method,
                        self.code.name, seconds * 1000,
                        f" error_id={self.error_id}" if self.error_id else "")
        if self.on_finish is not None:
            self.on_finish()


class Guard(Generic[Req]):
    """The one guard around every handler, unary and streaming: an undecodable request
    is refused, an exception becomes its status (``status_for``), cancellation is
    recorded, and the RPC's record finishes once (metrics and the access-log line).

    ``async with guard as request`` gives the decoded request; ``__aexit__`` never
    swallows an exception (it re-raises, or aborts the RPC with the mapped status)."""

    def __init__(self, call: CallRecord, request: Req | Undecodable,
                 context: grpc.aio.ServicerContext) -> None:
        self.call, self.request, self.context = call, request, context

    async def _fail(self, exc: Exception) -> NoReturn:
        st = self.call.failed(exc)
        try:
            await self.context.abort(st.code, st.message)  # raises
        finally:
            self.call.finish()

    async def __aenter__(self) -> Req:
        request = self.request
        if isinstance(request, Undecodable):
            await self._fail(request.error())
        return request

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            self.call.code = grpc.StatusCode.CANCELLED
        elif isinstance(exc, Exception):
            await self._fail(exc)
            return
        self.call.finish()


def retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def abandon(fut: asyncio.Future[Any], stop: Stop | None) -> None:
    """The RPC is gone (cancelled): ask the worker to stop, and retrieve its outcome when
    it comes, so that nothing is logged as never retrieved. Nothing here waits: the
    handler ends at once (grpc and asyncio.run cancel handlers that outlive the server)."""
    if stop is not None:
        stop.event.set()
    fut.add_done_callback(retrieve)
