"""Fit a training recipe to a wall-clock budget on the machine at hand.

``fetalflex train --budget-minutes M`` measures each stage's optimizer steps per second on
this machine (real batches from the data set, the real loss, backward, AdamW and EMA update),
then scales every stage's steps and warm-up by one factor so the whole recipe fits the
budget: the stages keep their proportions and each stage's cosine schedule still ends at
its last step. Training then runs with the budget as a hard deadline (a step rate that falls
after the probe stops training at the deadline with its weights saved, never past it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from fetalflex.data.dataset import PhantomDataset
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.diffusion import alphas_cumprod_for
from fetalflex.training import clock
from fetalflex.training.config import TrainConfig
from fetalflex.training.ema import EMA
from fetalflex.training.train import (
    STAGES,
    Dist,
    StageLoss,
    data_batches,
    optimizer_step,
    stage_params,
    train_device,
)

# Share of the time left after the probe that the scaled recipe plans to use: the rest
# covers model set-up, checkpoints, logging and the final save (the data set is loaded once,
# before the probe, and its time is part of the probe's).
PLAN_SHARE = 0.9


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_step_rates(cfg: TrainConfig, manifest: Path, stages: tuple[str, ...] = STAGES,
                       steps: int = 12, warmup: int = 4,
                       dataset: PhantomDataset | None = None) -> dict[str, float]:
    """Optimizer steps per second of each stage (fresh weights; the rate does not depend on
    them), measured after ``warmup`` steps."""
    d = Dist()
    dev = train_device(cfg, d)
    _, it = data_batches(cfg, manifest, d, dev, dataset)
    model = FetalFlexDenoiser(cfg.model).to(dev)
    ema = EMA(model, cfg.ema_decay)
    ac = alphas_cumprod_for(cfg.model).to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    rates: dict[str, float] = {}
    for stage in stages:
        if (stage == "prealign" and not cfg.pre_alignment) or getattr(cfg, stage).steps == 0:
            continue  # a stage the recipe skips (fine-tuning: control only) costs nothing
        params = stage_params(model, stage, cfg)
        net = StageLoss(model, stage, cfg, ac)
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=cfg.weight_decay)
        t0 = 0.0
        for i in range(warmup + steps):
            if i == warmup:
                _sync(dev)
                t0 = time.perf_counter()
            optimizer_step(net, next(it), gen, opt, params, cfg, dev)
            ema.update(model, i)
        _sync(dev)
        rates[stage] = steps / (time.perf_counter() - t0)
    return rates


def planned_seconds(cfg: TrainConfig, rates: dict[str, float]) -> float:
    return sum(getattr(cfg, s).steps / r for s, r in rates.items())


def scaled(cfg: TrainConfig, factor: float, rates: dict[str, float]) -> TrainConfig:
    """Every measured stage's steps and warm-up times ``factor`` (at least one step; a stage
    the recipe skips is not measured and stays skipped)."""
    update: dict[str, Any] = {}
    for s in rates:
        sc = getattr(cfg, s)
        steps = max(1, round(sc.steps * factor))
        update[s] = sc.model_copy(update={"steps": steps,
                                          "warmup_steps": min(round(sc.warmup_steps * factor),
                                                              steps)})
    return cfg.model_copy(update=update)


def fit_to_budget(cfg: TrainConfig, manifest: Path, seconds: float,
                  stages: tuple[str, ...] = STAGES, dataset: PhantomDataset | None = None,
                  started: float | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """The recipe scaled to ``seconds`` of wall clock (probe included), and a report.

    ``dataset``: the set already loaded, to be reused by training (``train(dataset=)``);
    ``started``: the ``clock.now()`` the budget counts from (default: now), so the
    time spent loading it is charged to the budget."""
    if seconds <= 0:
        raise ValueError(f"budget: must be positive, got {seconds} s")
    t0 = clock.now() if started is None else started
    rates = measure_step_rates(cfg, manifest, stages, dataset=dataset)
    left = seconds - (clock.now() - t0)
    if left <= 0:
        raise ValueError(f"budget: {seconds:.0f} s is spent by the step-rate probe alone")
    factor = PLAN_SHARE * left / planned_seconds(cfg, rates)
    fitted = scaled(cfg, factor, rates)
    report = {"budget_s": seconds, "probe_s": round(seconds - left, 1),
              "steps_per_s": {k: round(v, 3) for k, v in rates.items()},
              "factor": round(factor, 4),
              "steps": {s: getattr(fitted, s).steps for s in rates},
              "samples": {s: getattr(fitted, s).steps * cfg.batch_size for s in rates},
              "planned_s": round(planned_seconds(fitted, rates), 1)}
    return fitted, report
