"""``fetalflex phantom``: a phantom data set (images, label maps, manifest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import SIZE_HELP, Subcommands, model_size


def register(sub: Subcommands) -> None:
    from fetalflex.anatomy.planes import PLANE_CODES, canonical_code

    p = sub.add_parser("phantom", help="write a phantom data set (images, label maps, manifest)")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--planes", nargs="+", default=list(PLANE_CODES), choices=PLANE_CODES,
                   type=canonical_code)
    p.add_argument("--size", type=int, default=model_size(), help=SIZE_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--abnormal-fraction", type=float, default=0.0,
                   help="fraction of abnormal phantoms (for evaluation only)")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fetalflex.data.phantom_set import write_phantom_set

    with tqdm(total=args.n, unit="img", desc="phantom", disable=args.quiet) as bar:

        def advance(k: int) -> None:
            bar.update(k)

        manifest = write_phantom_set(
            Path(args.out), args.n, planes=args.planes, size=args.size, seed=args.seed,
            abnormal_fraction=args.abnormal_fraction, workers=args.workers, progress=advance,
        )
    print(f"wrote {args.n} pairs and {manifest}")
    return 0
