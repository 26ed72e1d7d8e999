"""``fetalflex reproduce``: regenerate the outputs of a sidecar JSON, byte for byte."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands, overwrite_arg


def register(sub: Subcommands) -> None:
    from fetalflex.request import DEFAULT_BACKEND, IN_PROCESS_BACKENDS

    p = sub.add_parser("reproduce", help="regenerate the outputs of a sidecar JSON, byte for "
                                         "byte (same weights)")
    p.add_argument("sidecar", help="the .json sidecar written by generate / the Python API")
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", default=None)
    overwrite_arg(p)
    p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--backend", default=None, choices=IN_PROCESS_BACKENDS,
                   help="in-process backend (default: the one the record names, if it is "
                        f"in-process, else {DEFAULT_BACKEND})")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.api import FetalFlex
    from fetalflex.io.output_dir import prepare_output_dir
    from fetalflex.record import read_recipe
    from fetalflex.request import DEFAULT_BACKEND, IN_PROCESS_BACKENDS

    record = read_recipe(Path(args.sidecar))  # a clear error before any model loads
    prepare_output_dir(Path(args.out), args.prefix or record.request.plane.lower(),
                       args.overwrite)
    backend = args.backend or (record.model.backend
                               if record.model.backend in IN_PROCESS_BACKENDS else
                               DEFAULT_BACKEND)
    ff = FetalFlex.load(args.weights, backend=backend, threads=args.threads,
                        precision=record.model.precision)
    out = ff.reproduce(Path(args.sidecar))
    path = out.save(Path(args.out), args.prefix, overwrite=args.overwrite)
    print(f"reproduced {len(out.images)} sample(s) from {args.sidecar} into {path}")
    return 0
