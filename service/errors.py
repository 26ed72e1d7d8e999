"""Domain errors and the one place where exceptions become gRPC status codes.

One status per failure class: a bad input is INVALID_ARGUMENT naming the field, load is
RESOURCE_EXHAUSTED, and INTERNAL is kept for our own bugs (a generic message and an error
id that the log line carries too). Client-facing messages are cut to ``MAX_DETAIL`` chars,
so a message echoing a huge field can never overflow the trailers.
"""

from __future__ import annotations

import logging
import uuid
from typing import NamedTuple

import grpc
from pydantic import ValidationError

from fetalflex.backends.triton import TritonDeadlineError, TritonUnavailableError

log = logging.getLogger("fetalflex.service")

MAX_DETAIL = 300  # characters of a client-facing status message


def bounded(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


class InvalidRequestError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(bounded(f"{field}: {reason}"))
        self.field = field


class OverloadedError(RuntimeError):
    pass


class NotReadyError(RuntimeError):
    pass


class CancelledError(RuntimeError):
    pass


class DeadlineError(RuntimeError):
    pass


class Status(NamedTuple):
    code: grpc.StatusCode
    message: str  # safe to send: bounded, no internals
    reason: str  # the rejected-requests metric's label; "internal" for our bugs
    error_id: str | None = None  # internal errors only: in the log line and the message


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e["loc"]) or "request"
        parts.append(f"{loc}: {str(e['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def _classify(exc: BaseException) -> tuple[grpc.StatusCode, str, str] | None:
    if isinstance(exc, ValidationError):
        return grpc.StatusCode.INVALID_ARGUMENT, _pydantic_message(exc), "invalid"
    if isinstance(exc, OverloadedError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), "overloaded"
    if isinstance(exc, TritonUnavailableError | NotReadyError):
        return grpc.StatusCode.UNAVAILABLE, str(exc), "unavailable"
    if isinstance(exc, DeadlineError | TritonDeadlineError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc), "deadline"
    if isinstance(exc, CancelledError):
        return grpc.StatusCode.CANCELLED, str(exc), "cancelled"
    if isinstance(exc, ValueError):  # our validation and edit errors name field and reason
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), "invalid"
    return None


def status_for(exc: BaseException) -> Status:
    """The status a failure is answered with. Internal errors get an id and no details."""
    known = _classify(exc)
    if known is not None:
        code, message, reason = known
        return Status(code, bounded(message), reason)
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s: %s", error_id, type(exc).__name__, exc_info=exc)
    return Status(grpc.StatusCode.INTERNAL, f"internal error (id {error_id})", "internal",
                  error_id)
