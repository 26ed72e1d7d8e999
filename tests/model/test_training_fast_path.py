"""The GPU-feeding training path: device-resident batches, parallel preload, the wall-clock
budget and its hard deadline (fetalflex/training/batches.py, budget.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fetalflex.data.dataset import PhantomDataset
from fetalflex.training.batches import ResidentBatches
from fetalflex.training.budget import fit_to_budget, planned_seconds, scaled
from fetalflex.training.config import TrainConfig
from fetalflex.training.train import train
from tests.conftest import TINY_MODEL


def _cfg(**kw: object) -> TrainConfig:
    base = {"model": TINY_MODEL, "base": {"steps": 30, "warmup_steps": 6},
            "prealign": {"steps": 10, "lr": 1e-3, "warmup_steps": 2},
            "control": {"steps": 60, "warmup_steps": 6}, "batch_size": 4,
            "checkpoint_every": 5, "log_every": 1, "box_prob": 0.5, "batching": "resident"}
    base.update(kw)
    return TrainConfig.model_validate(base)


@pytest.mark.parametrize("box_prob", [0.0, 1.0])
def test_resident_batches_hold_the_items_getitem_gives(tiny_data: Path, box_prob: float
                                                       ) -> None:
    ds = PhantomDataset(tiny_data, preload=True, box_prob=box_prob, seed=3)
    rb = ResidentBatches(ds, batch_size=5, device=torch.device("cpu"), seed=1)
    idx = torch.tensor([4, 0, 7, 7, 20])
    got = rb.batch(idx)
    want = {k: torch.stack([ds[int(i)][k] for i in idx]) for k in got}
    for k in ("image", "layout", "label_map", "plane"):
        assert got[k].dtype == want[k].dtype, k
        assert torch.equal(got[k], want[k]), k
    assert torch.equal(torch.isnan(got["ga"]), torch.isnan(want["ga"]))
    assert torch.allclose(got["ga"].nan_to_num(), want["ga"].nan_to_num())


def test_resident_epochs_are_permutations_and_ranks_disjoint(tiny_data: Path) -> None:
    ds = PhantomDataset(tiny_data, preload=True, box_prob=0.3)
    n = len(ds)
    one = ResidentBatches(ds, batch_size=4, device=torch.device("cpu"))
    it = one.indices()
    epoch = torch.cat([next(it) for _ in range(n // 4)])
    assert len(set(epoch.tolist())) == len(epoch) == (n // 4) * 4  # no repeats, last dropped
    ranks = [ResidentBatches(ds, 2, torch.device("cpu"), seed=5, rank=r, world=2)
             for r in (0, 1)]
    a, b = (set(next(r.indices()).tolist()) for r in ranks)
    assert not a & b
    with pytest.raises(ValueError, match="batch_size"):
        ResidentBatches(ds, batch_size=n + 1, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="preload"):
        ResidentBatches(PhantomDataset(tiny_data), 4, torch.device("cpu"))


def test_parallel_preload_equals_serial(tiny_data: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    import fetalflex.data.dataset as dataset

    serial = PhantomDataset(tiny_data, box_prob=1.0, workers=1)
    monkeypatch.setattr(dataset, "PARALLEL_MIN_ITEMS", 0)
    parallel = PhantomDataset(tiny_data, box_prob=1.0, workers=2)
    items = parallel._load_all()
    assert len(items) == len(serial)
    for i, (img, lab, boxes) in enumerate(items):
        s_img, s_lab, s_boxes = serial._load(i)
        assert np.array_equal(img, s_img) and np.array_equal(lab, s_lab)
        assert boxes is not None and s_boxes is not None and np.array_equal(boxes, s_boxes)


def test_resident_training_runs_and_a_passed_deadline_stops_with_weights(
        tiny_data: Path, tmp_path: Path) -> None:
    final = train(_cfg(base={"steps": 2, "warmup_steps": 1}, prealign={"steps": 1},
                       control={"steps": 2, "warmup_steps": 1}),
                  tiny_data, tmp_path / "full", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["base"] * 2 + ["prealign"] + ["control"] * 2
    stopped = train(_cfg(), tiny_data, tmp_path / "late", progress=False,
                    deadline=time.monotonic())
    with safe_open(str(stopped / "model.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["fetalflex"])
    assert meta["stopped_at_deadline"] is True and sum(meta["steps"].values()) == 0
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        assert "stopped_at_deadline" not in json.loads(f.metadata()["fetalflex"])


def test_budget_scales_every_stage_by_one_factor(tiny_data: Path) -> None:
    cfg = _cfg()
    rates = {"base": 10.0, "prealign": 50.0, "control": 5.0}
    half = scaled(cfg, 0.5, rates)
    assert (half.base.steps, half.prealign.steps, half.control.steps) == (15, 5, 30)
    assert (half.base.warmup_steps, half.control.warmup_steps) == (3, 3)
    assert planned_seconds(half, rates) == pytest.approx(planned_seconds(cfg, rates) / 2)
    assert scaled(cfg, 1e-6, rates).control.steps == 1  # never a stage of zero steps
    from fetalflex.training import clock

    clock.use(clock.TickClock(0.001))
    try:
        fitted, report = fit_to_budget(cfg, tiny_data, 60.0)
    finally:
        clock.use(None)
    assert set(report["steps_per_s"]) == {"base", "prealign", "control"}
    assert 0 < report["planned_s"] <= 60.0
    assert fitted.control.steps == report["steps"]["control"] >= 1
    with pytest.raises(ValueError, match="budget"):
        fit_to_budget(cfg, tiny_data, 0)
    # fine-tuning skips base and pre-alignment: they are neither probed nor run
    control_only = cfg.model_copy(update={"base": cfg.base.model_copy(update={"steps": 0}),
                                          "prealign": cfg.prealign.model_copy(
                                              update={"steps": 0})})
    clock.use(clock.TickClock(0.001))
    try:
        fitted, report = fit_to_budget(control_only, tiny_data, 60.0)
    finally:
        clock.use(None)
    assert set(report["steps_per_s"]) == {"control"}
    assert (fitted.base.steps, fitted.prealign.steps) == (0, 0)


def test_budgeted_training_loads_the_data_set_once(tiny_data: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe and the training that follows share one loaded set (loading it is the
    slow part of a short GPU run), and the load is charged to the budget."""
    import fetalflex.training.train as tr
    from fetalflex.cli import main

    loads: list[Path] = []

    class Counted(PhantomDataset):
        def __init__(self, manifest: Path, **kw: object) -> None:
            loads.append(manifest)
            super().__init__(manifest, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(tr, "PhantomDataset", Counted)
    # The budget's clock ticks 0.1 s per reading: the test does not depend on machine load
    # (a busy machine once spent the whole 15 s budget in the probe).
    from fetalflex.training import clock

    clock.use(clock.TickClock(0.1))
    cfg_path = tmp_path / "cfg.json"
    _cfg().save(cfg_path)
    run = tmp_path / "run"
    try:
        assert main(["train", "--config", str(cfg_path), "--data", str(tiny_data), "--out",
                     str(run), "--budget-minutes", "0.25", "--quiet"]) == 0
    finally:
        clock.use(None)
    assert loads == [tiny_data]
    budget = json.loads((run / "budget.json").read_text())
    assert budget["probe_s"] > 0 and budget["planned_s"] <= 0.25 * 60
    assert (run / "final" / "model.safetensors").is_file()
