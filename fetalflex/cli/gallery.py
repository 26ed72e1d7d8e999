"""``fetalflex gallery``: normal planes + anomaly pairs, one gallery PNG (fetalflex/
generate_cli.py does the work)."""

from __future__ import annotations

import argparse

from fetalflex.cli.args import Subcommands, backend_args, overwrite_arg


def register(sub: Subcommands) -> None:
    p = sub.add_parser("gallery", help="normal planes + anomaly pairs, one gallery PNG")
    p.add_argument("--out", default="out/gallery")
    overwrite_arg(p)
    backend_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.generate_cli import run_gallery

    return run_gallery(args)
