"""``fetalflex client generate|stream|planes``: talk to a running service."""

from __future__ import annotations

import argparse

from fetalflex.cli.args import CLIENT_FIELDS, Subcommands, overwrite_arg, sampling_args
from fetalflex.cli_common import connection_args


def register(sub: Subcommands) -> None:
    from fetalflex.anatomy.planes import PLANE_CODES, canonical_code
    from fetalflex.anatomy.presets import BY_NAME as PRESET_NAMES
    from fetalflex.record import OUTPUT_FORMATS
    from fetalflex.request_flags import add_request_flags

    p = sub.add_parser("client", help="talk to a running service")
    p.add_argument("action", choices=["generate", "stream", "planes"])
    connection_args(p, token=True)
    p.add_argument("--plane", choices=PLANE_CODES, type=canonical_code,
                   help="required for generate and stream, as for `fetalflex generate`")
    add_request_flags(p, CLIENT_FIELDS, choices={"preset": sorted(PRESET_NAMES)})
    p.add_argument("--edit", action="append", help="edit JSON (repeatable)")
    sampling_args(p)
    p.add_argument("--format", default=OUTPUT_FORMATS[0], choices=[*OUTPUT_FORMATS, "raw"])
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--out", default="out/client")
    overwrite_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.client import run_client

    return run_client(args)
