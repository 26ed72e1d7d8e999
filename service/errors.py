"""The one place where exceptions become gRPC status codes (KServe's exception map).

One status per failure class: bad input is INVALID_ARGUMENT naming the field (the
library's named errors, :mod:`fetalflex.errors`, and pydantic's ``ValidationError``), load
is RESOURCE_EXHAUSTED, and INTERNAL is kept for our own bugs: anything else, a plain
``ValueError`` included, gets a generic message and an error id that the log line (with
the traceback) carries too. Client-facing messages are cut to ``MAX_DETAIL`` chars, so a
message echoing a huge field can never overflow the trailers.
"""

from __future__ import annotations

import logging
import uuid
from typing import NamedTuple

import grpc
from pydantic import ValidationError

from fetalflex.backends.triton import TritonDeadlineError, TritonUnavailableError
from fetalflex.errors import InvalidRequestError, field_errors

log = logging.getLogger("fetalflex.service")

MAX_DETAIL = 300  # characters of a client-facing status message


def bounded(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


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
    return "; ".join(str(e) for e in field_errors(exc)[:5])


# The map: the first entry whose exception types match gives the status code and the
# rejected-requests metric's reason. Nothing else is a client's fault.
STATUS_MAP: tuple[tuple[tuple[type[BaseException], ...], grpc.StatusCode, str], ...] = (
    ((ValidationError, InvalidRequestError), grpc.StatusCode.INVALID_ARGUMENT, "invalid"),
    ((OverloadedError,), grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded"),
    ((TritonUnavailableError, NotReadyError), grpc.StatusCode.UNAVAILABLE, "unavailable"),
    ((DeadlineError, TritonDeadlineError), grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
    ((CancelledError,), grpc.StatusCode.CANCELLED, "cancelled"),
)


def status_for(exc: BaseException) -> Status:
    """The status a failure is answered with. Internal errors get an id and no details."""
    for kinds, code, reason in STATUS_MAP:
        if isinstance(exc, kinds):
            message = _pydantic_message(exc) if isinstance(exc, ValidationError) else str(exc)
            return Status(code, bounded(message), reason)
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s: %s", error_id, type(exc).__name__, exc_info=exc)
    return Status(grpc.StatusCode.INTERNAL, f"internal error (id {error_id})", "internal",
                  error_id)
