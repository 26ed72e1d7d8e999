"""``fetalflex evaluate-downstream``: anomaly classifiers trained on FetalFlex twins vs
baselines (AUC)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import Subcommands, precision_arg


def register(sub: Subcommands) -> None:
    from fetalflex.anatomy.presets import BY_NAME as PRESET_NAMES
    from fetalflex.evaluation.options import CONDITIONS, READERS, DownstreamOptions
    from fetalflex.request import DEFAULT_BACKEND, IN_PROCESS_BACKENDS

    p = sub.add_parser("evaluate-downstream",
                       help="anomaly classifiers trained on FetalFlex twins vs baselines (AUC)")
    p.add_argument("--weights", "--model", dest="weights", default=None,
                   help="denoiser weights (default: shipped; --model: the old name)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=IN_PROCESS_BACKENDS)
    precision_arg(p)
    p.add_argument("--out", required=True)
    D = DownstreamOptions()
    p.add_argument("--normals-per-plane", type=int, default=D.normals_per_plane)
    p.add_argument("--synth-per-preset", type=int, default=D.synth_per_preset)
    p.add_argument("--test-per-preset", type=int, default=D.test_per_preset)
    p.add_argument("--plane-sizes", type=int, nargs="+", default=list(D.plane_sizes))
    p.add_argument("--plane-synth-per-plane", type=int, default=D.plane_synth_per_plane)
    p.add_argument("--plane-test-per-plane", type=int, default=D.plane_test_per_plane)
    p.add_argument("--train-seeds", type=int, nargs="+", default=list(D.train_seeds))
    p.add_argument("--reader", choices=READERS, default=D.reader,
                   help="the classifiers' architecture and recipe (small: the reader of the "
                        "runs up to v3, train it 300 steps to repeat them)")
    p.add_argument("--classifier-steps", type=int, default=D.classifier_steps)
    p.add_argument("--presets", nargs="+", choices=sorted(PRESET_NAMES), type=str.lower,
                   default=None)
    p.add_argument("--guidance", type=float, default=D.guidance,
                   help="classifier-free guidance of the twins' repaint")
    p.add_argument("--control-scale", type=float, default=D.control_scale,
                   help="anatomy-control scale of the twins' repaint")
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(D.conditions),
                   help="training regimes to run (normal_only and oracle do not depend on "
                        "the generator)")
    p.add_argument("--skip-plane-classifier", action="store_true",
                   help="leave out the plane-classifier experiment")
    p.add_argument("--seed", type=int, default=D.seed)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.downstream import run_downstream
    from fetalflex.evaluation.options import DownstreamOptions
    from fetalflex.reports.downstream_report import markdown

    if args.threads:
        torch.set_num_threads(args.threads)
    opts = DownstreamOptions(
        normals_per_plane=args.normals_per_plane, synth_per_preset=args.synth_per_preset,
        test_per_preset=args.test_per_preset, plane_sizes=tuple(args.plane_sizes),
        plane_synth_per_plane=args.plane_synth_per_plane,
        plane_test_per_plane=args.plane_test_per_plane, train_seeds=tuple(args.train_seeds),
        reader=args.reader, classifier_steps=args.classifier_steps, seed=args.seed,
        presets=tuple(args.presets) if args.presets else DownstreamOptions().presets,
        guidance=args.guidance, control_scale=args.control_scale,
        conditions=tuple(args.conditions), plane_experiment=not args.skip_plane_classifier)
    backend = load_backend(args.backend, Path(args.weights) if args.weights else None,
                           threads=args.threads, precision=args.precision)
    res = run_downstream(backend, opts, Path(args.out))
    print(markdown(res))
    return 0
