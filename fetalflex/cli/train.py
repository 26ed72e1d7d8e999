"""``fetalflex train``: train the denoiser (base, pre-alignment, control)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    p = sub.add_parser("train", help="train the denoiser (base, pre-alignment, control)")
    p.add_argument("--config", required=True, help="training config JSON")
    p.add_argument("--data", required=True, help="manifest.jsonl")
    p.add_argument("--out", required=True, help="run directory (resumed if it has a checkpoint)")
    p.add_argument("--stages", nargs="+", choices=["base", "prealign", "control"])
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="fine-tune: start from these weights (a folder with config.json and "
                        "model.safetensors, e.g. the shipped ones: "
                        "fetalflex/weights/denoiser); sets the config's init_weights")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="measure each stage's step rate here, scale the recipe's steps to fit "
                        "this wall-clock budget, and stop at it (fetalflex/training/budget.py)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (log.jsonl has it all)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.training.config import TrainConfig
    from fetalflex.training.train import STAGES, train

    cfg = TrainConfig.load(Path(args.config))
    if args.init is not None:
        cfg = cfg.model_copy(update={"init_weights": args.init})
    stages = tuple(args.stages) if args.stages else STAGES
    out = Path(args.out)
    deadline = None
    dataset = None
    if args.budget_minutes is not None:
        from fetalflex.training import clock
        from fetalflex.training.budget import fit_to_budget
        from fetalflex.training.train import load_dataset

        if (out / "checkpoint.pt").exists() and not args.no_resume:
            raise ValueError(f"--budget-minutes: {out} has a checkpoint; a budget fits a fresh "
                             "run (resume it without --budget-minutes, or pass --no-resume)")
        started = clock.now()
        deadline = started + args.budget_minutes * 60
        dataset = load_dataset(cfg, Path(args.data))  # once: the probe and training share it
        cfg, report = fit_to_budget(cfg, Path(args.data), args.budget_minutes * 60, stages,
                                    dataset=dataset, started=started)
        out.mkdir(parents=True, exist_ok=True)
        (out / "budget.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"budget: {json.dumps(report)}", flush=True)
    final = train(cfg, Path(args.data), out, stages=stages, resume=not args.no_resume,
                  progress=not args.quiet, deadline=deadline, dataset=dataset)
    print(f"final EMA weights: {final}")
    return 0
