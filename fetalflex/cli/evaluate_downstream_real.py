"""``fetalflex evaluate-downstream-real``: do generated scans help real models? Head
segmentation (HC18) and plane classification (FETAL_PLANES_DB) trained on real, real +
synthetic and synthetic scans only, measured on the validation split."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    from fetalflex.evaluation.options import (
        REAL_DOWNSTREAM_PARTS,
        SYNTH_LAYOUTS,
        RealDownstreamOptions,
    )
    from fetalflex.request import APPEARANCE_NAMES

    d = RealDownstreamOptions()
    p = sub.add_parser("evaluate-downstream-real",
                       help="do generated scans help real models? head segmentation (HC18) "
                            "and plane classification (FETAL_PLANES_DB), real only vs real + "
                            "synthetic vs synthetic only, on the validation split")
    p.add_argument("--data", nargs="+", required=True,
                   help="manifest(s) written by `fetalflex import` (their val split is measured)")
    p.add_argument("--out", default="out/real_downstream")
    p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--guidance", type=float, default=d.guidance,
                   help="classifier-free guidance of every generated scan (default: what the "
                        "weights recommend for the appearance)")
    p.add_argument("--appearance", default=d.appearance, choices=APPEARANCE_NAMES,
                   type=str.lower)
    p.add_argument("--head-sizes", type=int, nargs="+", default=list(d.head_sizes),
                   help="real training heads per cell (0 = all)")
    p.add_argument("--plane-sizes", type=int, nargs="+", default=list(d.plane_sizes),
                   help="real training scans per class per cell (0 = all)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    p.add_argument("--segmenter-steps", type=int, default=d.segmenter_steps)
    p.add_argument("--reader-steps", type=int, default=d.reader_steps)
    p.add_argument("--synth-heads", type=int, default=d.synth_heads)
    p.add_argument("--synth-per-class", type=int, default=d.synth_per_class)
    p.add_argument("--synth-layouts", default=d.synth_layouts, choices=SYNTH_LAYOUTS,
                   help="what generated plane scans are conditioned on: sector = the field of "
                        "view of a real training scan of the plane, empty = nothing labelled")
    p.add_argument("--reader-real-share", type=float, default=d.reader_real_share,
                   help="real + synthetic plane readers: the share of every batch drawn from "
                        "the real scans (default: one pool)")
    p.add_argument("--segmenter-real-share", type=float, default=d.segmenter_real_share,
                   help="real + synthetic head segmenters: the share of every batch drawn "
                        "from the real scans (default: one pool)")
    p.add_argument("--parts", nargs="+", default=list(d.parts), choices=REAL_DOWNSTREAM_PARTS)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.options import RealDownstreamOptions
    from fetalflex.evaluation.real_downstream import evaluate_downstream_real
    from fetalflex.generation import Engine
    from fetalflex.reports.real_downstream_report import figure, markdown

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    opts = RealDownstreamOptions(
        head_sizes=tuple(args.head_sizes), plane_sizes=tuple(args.plane_sizes),
        seeds=tuple(args.seeds), segmenter_steps=args.segmenter_steps,
        reader_steps=args.reader_steps, synth_heads=args.synth_heads,
        synth_per_class=args.synth_per_class, synth_layouts=args.synth_layouts,
        reader_real_share=args.reader_real_share,
        segmenter_real_share=args.segmenter_real_share,
        appearance=args.appearance,
        guidance=args.guidance,
        parts=tuple(args.parts))
    engine = Engine(load_backend("embedded", Path(args.weights) if args.weights else None,
                                 threads=args.threads))
    out = Path(args.out)
    res = evaluate_downstream_real(engine, [Path(m) for m in args.data], out, opts,
                                   log=lambda m: print(m, flush=True))
    md = markdown(res)
    (out / "real_downstream.md").write_text(md)
    figure(res, out / "real_downstream.png")
    print(md)
    print(f"wrote {out / 'real_downstream.json'}, {out / 'real_downstream.md'} and "
          f"{out / 'real_downstream.png'}")
    return 0
