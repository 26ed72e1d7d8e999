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
