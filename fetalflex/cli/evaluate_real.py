"""``fetalflex evaluate-real``: realism, outline control and copying on real validation scans
(imported manifests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands
from fetalflex.request import DEFAULT_PRECISION, PRECISION_BACKENDS


def register(sub: Subcommands) -> None:
    from fetalflex.evaluation.options import RealEvalOptions
    from fetalflex.request import APPEARANCE_NAMES, SAMPLER_NAMES

    p = sub.add_parser("evaluate-real", help="realism, outline control and copying on real "
                                             "validation scans (imported manifests)")
    p.add_argument("--data", nargs="+", required=True,
                   help="manifest(s) written by `fetalflex import` (their val split is measured)")
    p.add_argument("--out", default="out/real_eval")
    p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--baseline-weights", default=None,
                   help="also measure these weights (phantom appearance) on the same requests")
    p.add_argument("--appearance", default="real", choices=APPEARANCE_NAMES, type=str.lower)
    p.add_argument("--frd-python", default=None,
                   help="a Python interpreter with frd-score + pyradiomics, for the FRD rows "
                        "(default: this one, if it has them)")
    p.add_argument("--reader-steps", type=int, default=RealEvalOptions().reader_steps)
    p.add_argument("--segmenter-steps", type=int, default=RealEvalOptions().segmenter_steps)
    p.add_argument("--guidance", type=float, default=RealEvalOptions().guidance,
                   help="classifier-free guidance of every generated scan (default: what the "
                        "weights recommend for the appearance)")
    p.add_argument("--steps", type=int, default=RealEvalOptions().steps,
                   help="sampler steps of every generated scan (default: what the weights "
                        "recommend)")
    p.add_argument("--sampler", default=RealEvalOptions().sampler, choices=SAMPLER_NAMES,
                   help="sampler of every generated scan (default: what the weights "
                        "recommend)")
    p.add_argument("--twins-per-plane", type=int, default=RealEvalOptions().twins_per_plane,
                   help="template layouts per plane for the anomaly twins (0: skip them)")
    p.add_argument("--seed", type=int, default=RealEvalOptions().seed,
                   help="the instruments' training, the real halves and the bootstrap")
    p.add_argument("--generation-seed", type=int, default=RealEvalOptions().generation_seed,
                   help="another draw of the same generation requests (seed = this x 10^6 + "
                        "index) with the same instruments: the generator's seed-to-seed "
                        "spread")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default=DEFAULT_PRECISION,
                   choices=[k for k, v in PRECISION_BACKENDS.items() if "embedded" in v],
                   help="arithmetic of the generator's embedded graph (int8: the static "
                        "calibrated graph, built on first use)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.real import REAL_PLANES, RealEvalOptions, evaluate_real
    from fetalflex.evaluation.real_data import load_real
    from fetalflex.generation import Engine
    from fetalflex.reports.real_report import examples_figure, markdown

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    engine = Engine(load_backend("embedded", Path(args.weights) if args.weights else None,
                                 threads=args.threads, precision=args.precision))
    baseline = (Engine(load_backend("embedded", Path(args.baseline_weights),
                                    threads=args.threads)) if args.baseline_weights else None)
    opts = RealEvalOptions(reader_steps=args.reader_steps, segmenter_steps=args.segmenter_steps,
                           seed=args.seed, generation_seed=args.generation_seed,
                           appearance=args.appearance,
                           guidance=args.guidance, steps=args.steps, sampler=args.sampler,
                           twins_per_plane=args.twins_per_plane)
    out = Path(args.out)
    manifests = [Path(m) for m in args.data]
    res = evaluate_real(engine, manifests, out, opts, baseline=baseline,
                        frd_python=args.frd_python,
                        log=lambda m: print(m, flush=True))
    md = markdown(res)
    (out / "real_eval.md").write_text(md)
    val = load_real(manifests, "val")
    gen = np.load(out / "cache" / "generated_latest.npy")
    smp = res["sampling"]
    contrast = (", plane contrast " + ", ".join(f"{p} {w:g}" for p, w in
                                                  smp["plane_contrast"].items())
                if smp.get("plane_contrast") else "")
    title = (f"SYNTHETIC {args.appearance}-appearance scans, model {res['model'][:12]}\n"
             f"{smp['sampler']} {smp['steps']} steps, guidance {res['guidance']:g}"
             f"{contrast}, {smp['precision']}\n"
             "generated from the validation layouts")
    examples_figure(out / "generated_by_plane.png", val.planes, gen, REAL_PLANES, title=title)
    examples_figure(out / "real_vs_generated.png", val.planes, gen, REAL_PLANES,
                    real=val.images, title="left: real validation scans (data-set pixels: do "
                    "not publish); right: generated (SYNTHETIC)")
    print(md)
    print(f"wrote {out / 'real_eval.json'}, {out / 'real_eval.md'} and figures")
    return 0
