"""The library's named errors: what a caller did wrong, and a cancelled sampler.

Every check of caller input raises an :class:`InvalidRequestError` (or one of its kinds below)
that names the field and the reason, where the bad input is detected. The service answers
exactly these (and pydantic's ``ValidationError``) with INVALID_ARGUMENT naming the field
(``service/errors.py``, its one map); the CLI prints them as ``field: reason`` lines. Any
other exception, a plain ``ValueError`` included, is a bug of ours and reaches a client as
INTERNAL with an error id.

They subclass ``ValueError`` (as KServe's ``InvalidInput`` does), so a check inside a
pydantic validator still becomes a field-located ``ValidationError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class InvalidRequestError(ValueError):
    """Bad input: ``field`` names it (a request field or a path such as ``edits[1].fill``)
    and ``reason`` says what is wrong; the message is ``"field: reason"``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownPlaneError(InvalidRequestError):
    """A plane code that names no plane."""


class UnknownPresetError(InvalidRequestError):
    """A preset name that names no anomaly preset."""


class PresetPlaneError(InvalidRequestError):
    """A preset asked for on a plane it does not apply to."""


class UnknownStructureError(InvalidRequestError):
    """A structure name or label id that is not in the structure table."""


class InvalidLayoutError(InvalidRequestError):
    """A layout (label map, structure list or its size) that cannot be used as given."""


class EditError(InvalidRequestError):
    """An edit that cannot apply to this layout: a structure it names is not part of the
    plane or is absent, or nothing is left to fill the pixels it frees."""


class SamplingCancelledError(Exception):
    """A sampler's ``should_stop`` said stop: raised between two denoiser calls (the
    caller cancelled, or its deadline passed; the caller knows which)."""


# ---------------------------------------------------------------- pydantic's errors, named
_BOUNDS = {"greater_than_equal": (">=", "ge"), "less_than_equal": ("<=", "le"),
           "greater_than": (">", "gt"), "less_than": ("<", "lt")}


def _reason(err: Any) -> str:
    """A pydantic error as a short reason (no URL, no 'Input should be'); a number out of
    range says the bound and what came."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _BOUNDS:
        op, key = _BOUNDS[kind]
        got = err.get("input")
        short = isinstance(got, int | float) or (isinstance(got, str) and len(got) <= 32)
        shown = f", got {got}" if short else ""
        return f"must be {op} {ctx[key]}{shown}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind == "too_short":
        return f"must hold at least {ctx['min_length']} item(s)"
    return str(err["msg"]).removeprefix("Value error, ")


def field_errors(exc: ValidationError, prefix: str = "", top: str = "request",
                 rename: Mapping[str, str] | None = None) -> list[InvalidRequestError]:
    """Each entry of a pydantic validation error as the named error ``field: reason``: the
    one formatting of the CLI, the Python API, the service, manifests, records and data-set
    specs. ``prefix`` goes before every field (``repaint.``), ``top`` names an error of the
    whole object, ``rename`` maps schema names to the caller's (the proto's ``count``).
    Model-level checks that name their field first (``"pair: ..."``) are located there."""
    names = rename or {}
    out: list[InvalidRequestError] = []
    for e in exc.errors():
        loc = [names.get(str(x), str(x)) for x in e["loc"]]
        reason = _reason(e)
        head, sep, rest = reason.partition(": ")
        if sep and not loc and " " not in head:
            loc, reason = [head], rest
        field = ".".join(loc)
        out.append(InvalidRequestError(prefix + field if field else (prefix.rstrip(".") or top),
                                       reason))
    return out
