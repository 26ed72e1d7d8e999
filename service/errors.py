"""Domain errors and the one place where exceptions become gRPC status codes."""

from __future__ import annotations

import logging
import uuid

import grpc
from pydantic import ValidationError

from fetalflex.backends.triton import TritonDeadlineError, TritonUnavailableError

log = logging.getLogger("fetalflex.service")


class InvalidRequestError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


class OverloadedError(RuntimeError):
    pass


class NotReadyError(RuntimeError):
    pass


class CancelledError(RuntimeError):
    pass


class DeadlineError(RuntimeError):
    pass


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(x) for x in e["loc"]) or "request"
        parts.append(f"{loc}: {str(e['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(code, client message, reason label). Internal errors get an id and no details."""
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
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error %s: %s", error_id, type(exc).__name__, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error (id {error_id})", "internal"
