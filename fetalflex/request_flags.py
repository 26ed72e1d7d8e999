"""Command-line flags derived from the request schema (``GenerationRequest``): each flag's
name, type, default, choices, limits and help come from the schema's field, so the CLI's
``generate`` and ``client`` cannot drift from the API and the service (as ``serve``'s flags
come from its settings model)."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from typing import Any, Final, Literal, get_args, get_origin

from annotated_types import Ge, Le, Lt

from fetalflex.anatomy.planes import canonical_code
from fetalflex.request import GenerationRequest

# Schema field -> (flag, argparse dest) where the flag's name differs from the field's.
FLAG_NAMES: Final[dict[str, str]] = {"ga_weeks": "--ga"}
SCHEMA = GenerationRequest.model_fields
# Fields whose unset value is the weights' recommended sampling (``Engine.resolve``): their
# flags default to unset, and only a given flag reaches the request.
WEIGHTS_DEFAULTED: Final[tuple[str, ...]] = ("steps", "guidance", "sampler")


def sampling_given(args: argparse.Namespace) -> dict[str, Any]:
    """The weights-defaulted fields the command line set (unset ones left to the weights)."""
    return {name: getattr(args, dest_of(name)) for name in WEIGHTS_DEFAULTED
            if getattr(args, dest_of(name), None) is not None}


def flag_of(name: str) -> str:
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def dest_of(name: str) -> str:
    return flag_of(name).removeprefix("--").replace("-", "_")


def _base(annotation: Any) -> Any:
    """``X | None`` -> X."""
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _limits(name: str) -> str:
    lo = hi = None
    for m in SCHEMA[name].metadata:
        if isinstance(m, Ge):
            lo = m.ge
        elif isinstance(m, Le):
            hi = m.le
        elif isinstance(m, Lt):
            hi = f"< {m.lt}"
    if lo is None and hi is None:
        return ""
    return f"; {lo if lo is not None else ''}..{hi if hi is not None else ''}".replace(
        "..< ", " to < ")


def add_request_flags(p: argparse.ArgumentParser, names: Sequence[str],
                      choices: dict[str, Sequence[str]] | None = None) -> None:
    """One flag per schema field in ``names`` (``choices``: names the schema checks in a
    validator, e.g. presets, given to argparse too)."""
    for name in names:
        field = SCHEMA[name]
        base = _base(field.annotation)
        kw: dict[str, Any] = {"default": field.default,
                              "help": (field.description or name) + _limits(name)}
        if name in WEIGHTS_DEFAULTED:
            kw["default"] = None
            kw["help"] += (f" (default: what the weights recommend, else the schema's "
                           f"{field.default})")
        if base is bool:
            p.add_argument(flag_of(name), action="store_true", help=kw["help"])
            continue
        if get_origin(base) is Literal:
            kw.update(choices=get_args(base), type=str.lower)
        elif base in (int, float):
            kw["type"] = base
        else:
            kw["type"] = str
        if name == "plane":
            kw["type"] = canonical_code
        if choices and name in choices:
            kw["choices"] = list(choices[name])
            kw["type"] = str.lower
        p.add_argument(flag_of(name), **kw)


def request_values(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The schema fields ``names`` as the flags gave them (for ``GenerationRequest``)."""
    return {name: getattr(args, dest_of(name)) for name in names}
