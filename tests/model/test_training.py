from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.training.config import TrainConfig
from fetalflex.training.train import train
from tests.conftest import TINY_MODEL


def _cfg(**kw: object) -> TrainConfig:
    base = {"model": TINY_MODEL, "base": {"steps": 3, "warmup_steps": 1},
            "prealign": {"steps": 3, "lr": 1e-3, "warmup_steps": 1},
            "control": {"steps": 3, "warmup_steps": 1}, "batch_size": 4,
            "checkpoint_every": 2, "log_every": 1, "box_prob": 0.5}
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_three_stages_train_log_plot_and_save(tiny_data: Path, tmp_path: Path) -> None:
    final = train(_cfg(), tiny_data, tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["base"] * 3 + ["prealign"] * 3 + ["control"] * 3
    assert all(r["loss"] > 0 and r["steps_per_s"] > 0 for r in rows)
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    m = FetalFlexDenoiser.load(final)
    # training moved the anatomy branch away from its zero initialisation
    zero = sum(float(p.abs().sum()) for p in m.control.controlnet_down_blocks.parameters())
    assert zero > 0


def test_prealignment_reduces_feature_gap(tiny_data: Path, tmp_path: Path) -> None:
    cfg = _cfg(base={"steps": 2, "warmup_steps": 1},
               prealign={"steps": 40, "lr": 3e-3, "warmup_steps": 1},
               control={"steps": 0}, ema_decay=0.0)
    from fetalflex.data.dataset import PhantomDataset

    ds = PhantomDataset(tiny_data)
    batch = {k: torch.stack([ds[i][k] for i in range(8)]) for k in ("image", "layout")}
    run = tmp_path / "pa"
    train(cfg.model_copy(update={"prealign": cfg.prealign.model_copy(update={"steps": 0})}),
          tiny_data, run, progress=False)
    m0 = FetalFlexDenoiser.load(run / "final")
    train(cfg, tiny_data, run, progress=False)  # resumes: only the pre-alignment remains
    m1 = FetalFlexDenoiser.load(run / "final")

    def gap(m: FetalFlexDenoiser) -> float:
        with torch.no_grad():
            tgt = m.image_features(batch["image"])
            return float(torch.nn.functional.mse_loss(m.anatomy_encoder(batch["layout"]), tgt))

    assert gap(m1) < 0.7 * gap(m0)


def test_resume_continues_where_it_stopped(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    cfg = _cfg(pre_alignment=False)
    short = cfg.model_copy(update={"control": cfg.control.model_copy(update={"steps": 1})})
    train(short, tiny_data, run, progress=False)
    train(cfg, tiny_data, run, progress=False)
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in rows] == [
        ("base", 1), ("base", 2), ("base", 3), ("control", 1), ("control", 2), ("control", 3)]


def test_snapshots_and_prealign_bench_guard(tiny_data: Path, tmp_path: Path) -> None:
    import pytest

    from bench.prealign import bench_prealign

    run = tmp_path / "s"
    cfg = _cfg(pre_alignment=False, snapshot_every=2)
    train(cfg, tiny_data, run, progress=False)
    snaps = sorted(p.name for p in (run / "snapshots").iterdir())
    assert snaps == ["base-000002", "control-000002"]
    assert FetalFlexDenoiser.load(run / "snapshots" / "control-000002") is not None
    with pytest.raises(ValueError, match="right after the base stage"):
        bench_prealign(run / "checkpoint.pt", cfg, tiny_data, tiny_data, run, tmp_path / "b")


def test_torchrun_two_processes_ddp(tiny_data: Path, tmp_path: Path) -> None:
    """DistributedDataParallel under torchrun (gloo on CPU) with no code change."""
    import subprocess
    import sys

    cfg = tmp_path / "cfg.json"
    _cfg(pre_alignment=True).save(cfg)
    torchrun = Path(sys.executable).with_name("torchrun")
    res = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m",
                          "fetalflex.cli", "train", "--config", str(cfg), "--data",
                          str(tiny_data), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows].count("control") == 3  # only rank 0 logs
    assert FetalFlexDenoiser.load(tmp_path / "run" / "final") is not None


def test_shipped_configs_validate() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.glob("*.json"))
    assert {f.name for f in files} >= {"demo64_cpu.json", "gpu128.json", "tiny.json",
                                       "v2_128_cpu.json", "gpu256.json"}
    for f in files:
        TrainConfig.load(f)


def test_training_never_sees_abnormal_or_edited_anatomy(tiny_eval_data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The legitimacy rule of the generator: it learns from normal scans and their label maps
    only. Training on a manifest that holds abnormal phantoms must skip them, and the training
    path must never render phantoms, apply presets or edits (a team with real scans has no
    simulator to render edited layouts with)."""
    import fetalflex.anatomy.edits as edits
    import fetalflex.anatomy.presets as presets
    import fetalflex.data.phantom_set as phantom_set
    import fetalflex.phantom.simulator as simulator
    from fetalflex.data.dataset import PhantomDataset
    from fetalflex.data.manifest import read_manifest

    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("the training data path rendered or edited anatomy")

    for mod, name in ((edits, "apply_edits"), (edits, "apply_edit"), (presets, "apply_preset"),
                      (simulator, "simulate_bmode"), (phantom_set, "render_phantom")):
        monkeypatch.setattr(mod, name, forbidden)
    seen: list[int] = []
    real_getitem = PhantomDataset.__getitem__

    def spy(self: PhantomDataset, i: int) -> dict[str, torch.Tensor]:
        assert not self.records[i].abnormal and self.records[i].preset is None
        seen.append(i)
        return real_getitem(self, i)

    monkeypatch.setattr(PhantomDataset, "__getitem__", spy)
    recs = read_manifest(tiny_eval_data)
    assert any(r.abnormal for r in recs) and any(not r.abnormal for r in recs)
    cfg = _cfg(base={"steps": 1, "warmup_steps": 1}, prealign={"steps": 1, "warmup_steps": 1},
               control={"steps": 1, "warmup_steps": 1}, batch_size=2,
               augment={"prob": 1.0})
    train(cfg, tiny_eval_data, tmp_path / "run", progress=False)
    assert seen
