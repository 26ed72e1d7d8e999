"""``fetalflex calibrate-real``: fit trained weights' real-appearance tone curve onto the grey
levels of real training scans (``fetalflex.evaluation.real_tone``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    from fetalflex.evaluation.real_tone import CALIBRATION_SCANS, PLANE_MIN_SCANS

    p = sub.add_parser("calibrate-real",
                       help="map weights' real-appearance grey levels onto real training "
                            "scans' (a monotone tone curve in their config; validation "
                            "scans never read)")
    p.add_argument("--weights", default=None, help="weights to calibrate (default: shipped)")
    p.add_argument("--data", nargs="+", required=True, type=Path,
                   help="manifest(s) written by `fetalflex import` (their train split only)")
    p.add_argument("--out", required=True, type=Path,
                   help="new folder for the calibrated weights (tensors copied unchanged)")
    p.add_argument("--n", type=int, default=CALIBRATION_SCANS,
                   help="real training scans pooled (and as many generated images)")
    p.add_argument("--plane-min", type=int, default=PLANE_MIN_SCANS,
                   help="a plane with at least this many of the scans gets a curve of its "
                        "own; the others share the pooled one (0: one curve for all)")
    p.add_argument("--darken-below", type=int, default=0, metavar="LEVEL",
                   help="the curve only darkens, and only below this grey level (the "
                        "haze and the fluid; mid-tones untouched); 0: the full fitted curve")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.backends.backends import load_backend, weights_dir
    from fetalflex.evaluation.real_tone import calibrate_real
    from fetalflex.generation import Engine

    w = weights_dir(Path(args.weights) if args.weights else None)
    engine = Engine(load_backend("embedded", w, threads=args.threads))
    report = calibrate_real(engine, w, list(args.data), args.out, n=args.n, seed=args.seed,
                            plane_min=args.plane_min, darken_below=args.darken_below,
                            log=lambda m: print(m, flush=True))
    print(json.dumps({k: report[k] for k in ("real", "generated", "calibrated")}))
    return 0
