"""``fetalflex evaluate``: adherence, brightness, texture and anomaly twins per plane, against
sampler steps (phantom world)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fetalflex.cli.args import Subcommands, precision_arg


def register(sub: Subcommands) -> None:
    from fetalflex.anatomy.planes import PLANE_CODES, canonical_code
    from fetalflex.appearance import APPEARANCES
    from fetalflex.evaluation.options import EvalOptions
    from fetalflex.request import DEFAULT_BACKEND, IN_PROCESS_BACKENDS, SAMPLER_NAMES
    from fetalflex.weights import DEFAULT_SEGMENTER

    p = sub.add_parser("evaluate", help="adherence, brightness, texture and anomaly twins per "
                                        "plane, against sampler steps (phantom world)")
    p.add_argument("--weights", "--model", dest="weights", default=None,
                   help="denoiser weights (default: shipped; --model: the old name)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=IN_PROCESS_BACKENDS)
    precision_arg(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER))
    p.add_argument("--data", required=True, help="evaluation manifest.jsonl (not training data)")
    p.add_argument("--out", required=True)
    p.add_argument("--n-per-plane", type=int, default=EvalOptions.n_per_plane)
    p.add_argument("--steps", type=int, nargs="+", default=list(EvalOptions.steps),
                   help="sampler steps to compare")
    p.add_argument("--default-steps", type=int, default=EvalOptions.default_steps,
                   help="steps of the abnormal-layout and twin rows (must be in --steps)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance (default: what the weights recommend for the look, "
                        "else the request schema's)")
    p.add_argument("--sampler", default=EvalOptions.sampler, choices=SAMPLER_NAMES)
    p.add_argument("--twins-per-preset", type=int, default=EvalOptions.twins_per_preset)
    p.add_argument("--appearance", default=EvalOptions.appearance, choices=APPEARANCES,
                   help="the look asked for (default phantom: the references are phantoms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planes", nargs="+", default=list(PLANE_CODES), choices=PLANE_CODES,
                   type=canonical_code)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.evaluate import EvalOptions, evaluate

    backend = load_backend(args.backend, Path(args.weights) if args.weights else None,
                           threads=args.threads, precision=args.precision)
    opts = EvalOptions(n_per_plane=args.n_per_plane, steps=tuple(args.steps),
                       default_steps=args.default_steps, guidance=args.guidance,
                       sampler=args.sampler,
                       seed=args.seed, planes=tuple(args.planes),
                       twins_per_preset=args.twins_per_preset, appearance=args.appearance)
    res = evaluate(backend, Path(args.segmenter), Path(args.data), Path(args.out), opts)
    print((Path(args.out) / "evaluation.md").read_text())
    print(json.dumps({k: v for k, v in res["summary"].items() if k != "by_steps"}))
    return 0
