"""``fetalflex compare-evaluations``: several ``fetalflex evaluate`` (or several
``fetalflex evaluate-real``) results side by side (teacher vs student, seed vs seed), one
Markdown table."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    p = sub.add_parser("compare-evaluations",
                       help="several `fetalflex evaluate` or `evaluate-real` results side "
                            "by side (Markdown)")
    p.add_argument("results", nargs="+",
                   help="evaluation.json files written by evaluate, or real_eval.json files "
                        "written by evaluate-real")
    p.add_argument("--names", nargs="+", default=None,
                   help="column names (default: the folder of a result of the default "
                        "file name, else the file's stem)")
    p.add_argument("--out", default=None, help="also write the table to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.reports.evaluation_compare import compare_files

    md = compare_files([Path(r) for r in args.results], args.names)
    if args.out:
        Path(args.out).write_text(md)
    print(md, end="")
    return 0
