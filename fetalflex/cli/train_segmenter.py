"""``fetalflex train-segmenter``: train the reference segmenter on phantoms."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    p = sub.add_parser("train-segmenter", help="train the reference segmenter on phantoms")
    p.add_argument("--data", required=True, help="manifest.jsonl")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="U-Net widths per level (default: SegmenterConfig's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.evaluation.segmenter import train_segmenter

    out = train_segmenter(Path(args.data), Path(args.out), steps=args.steps,
                          batch_size=args.batch_size, threads=args.threads,
                          channels=tuple(args.channels) if args.channels else None)
    print(f"segmenter weights: {out}")
    return 0
