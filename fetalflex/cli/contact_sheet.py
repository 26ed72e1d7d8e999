"""``fetalflex contact-sheet``: the phantom contact sheet PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    p = sub.add_parser("contact-sheet", help="write the phantom contact sheet PNG")
    p.add_argument("--out", default="contact_sheet.png")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.reports.contact_sheet import write_contact_sheet

    out = write_contact_sheet(Path(args.out), size=args.size, seed=args.seed)
    print(f"wrote {out}")
    return 0
