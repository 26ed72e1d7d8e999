"""``fetalflex tune``: measure this host's engines and cache the fastest validated one
(``fetalflex.backends.tune``; ``--backend auto`` uses it)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    from fetalflex.request import PRECISIONS

    p = sub.add_parser("tune", help="measure the engines of this host (ONNX Runtime fp32/int8 "
                                    "at 1..N threads, PyTorch fp32/bf16, CUDA) and cache the "
                                    "fastest validated one for --backend auto")
    p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--calls", type=int, default=8, help="timed calls per engine (median)")
    p.add_argument("--batch", type=int, default=2,
                   help="rows per call (2: one guided image)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                   help="arithmetic to try")
    p.add_argument("--show", action="store_true",
                   help="print the cached measurement for this host and weights, if any")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.backends.backends import weights_dir
    from fetalflex.backends.tune import cached_report, rejudge, tune

    w = weights_dir(Path(args.weights) if args.weights else None)
    if args.show:
        report = cached_report(w)
        if report is None:
            print(f"no measurement cached for this host and {w}: run `fetalflex tune`")
            return 1
        before = report.choice
        report = rejudge(report)  # what --backend auto would use today
        if report.choice != before:
            print(f"(cached choice {before.label if before else 'none'} is no longer "
                  f"admitted by today's rules)")
    else:
        report = tune(w, calls=args.calls, batch=args.batch,
                      precisions=tuple(args.precisions), log=lambda m: print(m, flush=True))
    print(report.table())
    return 0
