"""Pre-alignment on vs off: anatomy adherence reached per control-training step.

Both arms start from the same trained base UNet (a checkpoint taken after the ``base``
stage), see the same data in the same order, and differ only in the switch
``pre_alignment``. Snapshots of the weights every ``eval_every`` control steps are read
back by the reference segmenter (adherence Dice, DDIM + CFG on evaluation layouts).
Figures only; the phantom world only.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from fetalflex.backends.backends import load_backend
from fetalflex.evaluation.evaluate import evaluate
from fetalflex.evaluation.options import EvalOptions
from fetalflex.request import DEFAULT_STEPS
from fetalflex.training.config import TrainConfig
from fetalflex.training.train import train


def bench_prealign(base_checkpoint: Path, config: TrainConfig, manifest: Path,
                   eval_manifest: Path, segmenter: Path, out: Path, steps: int = 200,
                   eval_every: int = 100, n_per_plane: int = 2,
                   sample_steps: int = DEFAULT_STEPS) -> list[dict[str, Any]]:
    ck = torch.load(base_checkpoint, map_location="cpu", weights_only=False)
    if set(ck["done"]) != {"base"}:
        raise ValueError(f"base_checkpoint: expected a checkpoint right after the base stage, "
                         f"got stages {ck['done']}")
    rows = []
    for switch in (True, False):
        run = out / ("with_prealign" if switch else "without_prealign")
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        shutil.copy(base_checkpoint, run / "checkpoint.pt")
        cfg = config.model_copy(update={
            "pre_alignment": switch, "ema_decay": 0.0, "snapshot_every": eval_every,
            "control": config.control.model_copy(update={"steps": steps}),
            "base": config.base.model_copy(update={"steps": ck["done"]["base"]}),
        })
        t0 = time.perf_counter()
        train(cfg, manifest, run, progress=False)
        seconds = time.perf_counter() - t0
        for snap in sorted((run / "snapshots").glob("control-*")):
            step = int(snap.name.split("-")[1])
            res = evaluate(load_backend("torch", snap), segmenter, eval_manifest,
                           run / f"eval-{step}",
                           EvalOptions(n_per_plane=n_per_plane, steps=(sample_steps,),
                                       default_steps=sample_steps, twins_per_preset=0))
            by = res["summary"]["by_steps"][str(sample_steps)]
            row = {"pre_alignment": switch, "control_step": step,
                   "adherence_dice": round(by["adherence_dice"], 4),
                   "train_seconds_total": round(seconds, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "bench_prealign.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows
