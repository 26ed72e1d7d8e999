"""``fetalflex serve``'s flags, made from the settings' own fields (``SERVE_FLAGS``).

Each flag is ``--`` + the setting's name with dashes; its type, choices and help come from
the field. A flag not given is None and leaves the setting to the file, the environment or
the default (``ServiceSettings.resolve``).
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any

from service.config import ENV_PREFIX, SERVE_FLAGS, ServiceSettings


def _flag_type(annotation: Any) -> tuple[Any, tuple[str, ...] | None]:
    """(argparse type, choices) for a field annotation such as ``int | None``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return str, tuple(typing.get_args(annotation))
    if args:  # an optional: the one other member
        return _flag_type(args[0])
    return annotation, None


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="settings JSON file (keys as in service/config.py); "
                                    "flags override it, it overrides FETALFLEX_* variables")
    for name in SERVE_FLAGS:
        field = ServiceSettings.model_fields[name]
        default = field.default
        shown = "unset" if default is None else default
        help_text = (f"{field.description} (env {ENV_PREFIX}{name.upper()}; "
                     f"default {shown})")
        flag = "--" + name.replace("_", "-")
        kind, choices = _flag_type(field.annotation)
        if kind is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_text)
        else:
            p.add_argument(flag, dest=name, type=kind, choices=choices, default=None,
                           metavar=None if choices else name.upper(), help=help_text)


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """Flags > ``--config`` file > ``FETALFLEX_*`` environment > defaults."""
    flags = {name: getattr(args, name) for name in SERVE_FLAGS}
    return ServiceSettings.resolve(flags, Path(args.config) if args.config else None)
