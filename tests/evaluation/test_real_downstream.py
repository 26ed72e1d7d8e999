"""``fetalflex evaluate-downstream-real`` end to end on small stand-ins of the real data
layouts: every task and arm, the outline draws, the metrics, resuming, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.anatomy.structures import BACKGROUND, UNLABELLED
from fetalflex.backends.backends import load_backend
from fetalflex.data.importers.fpdb import import_fpdb
from fetalflex.data.importers.hc18 import import_hc18
from fetalflex.evaluation.options import RealDownstreamOptions
from fetalflex.evaluation.real_data import load_real
from fetalflex.evaluation.real_downstream import (
    FPDB_SOURCE,
    SKULL,
    _synthetic_layouts,
    evaluate_downstream_real,
    macro_f1,
    pick,
    sample_outlines,
)
from fetalflex.generation import Engine
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.reports.real_downstream_report import markdown
from fetalflex.training.init_weights import load_initial
from tests.conftest import TINY_MODEL
from tests.real_fixtures import write_fpdb, write_hc18


def test_metrics_and_subsets() -> None:
    t = np.array([0, 0, 1, 2])
    assert macro_f1(t, t, 3) == 1.0
    assert macro_f1(np.array([0, 0, 0, 0]), t, 3) == pytest.approx((2 * 2 / 6 + 0 + 0) / 3)
    assert pick(0, 5, 1).tolist() == [0, 1, 2, 3, 4] and pick(9, 5, 1).tolist() == list(range(5))
    a = pick(3, 100, 7)
    assert len(set(a.tolist())) == 3 and a.tolist() == pick(3, 100, 7).tolist()
    with pytest.raises(ValueError, match="head_sizes"):
        RealDownstreamOptions(head_sizes=())
    with pytest.raises(ValueError, match="parts"):
        RealDownstreamOptions(parts=("heads", "lungs"))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("real")
    write_hc18(root / "hc18", n_subjects=12)
    write_fpdb(root / "fpdb", copies=8)
    return [import_hc18(root / "hc18", root / "hc", size=32, val_fraction=0.5)
            / "manifest.jsonl",
            import_fpdb(root / "fpdb", root / "fp", size=32, val_fraction=0.5)
            / "manifest.jsonl"]


def test_drawn_outlines_stay_in_the_scan_and_label_only_the_ring(
        manifests: list[Path]) -> None:
    train = load_real(manifests, "train")
    heads = train.subset(train.with_head())
    drawn = sample_outlines(heads, 12, seed=3)
    assert len(drawn) == 12
    for layout, mask in drawn:
        lm = layout.label_map
        assert layout.plane == "TT" and layout.field_mm > 0
        assert set(np.unique(lm).tolist()) <= {SKULL, UNLABELLED, 0}  # ring, unsaid, bands
        assert (lm == SKULL).any() and mask.sum() > (lm == SKULL).sum()
        assert not mask[0].any() and not mask[-1].any()  # inside the scan
    # drawn, not copied: sizes, positions and angles recombine
    assert len({lay.label_map.tobytes() for lay, _ in drawn}) == 12


def test_plane_layouts_take_a_training_scans_field_of_view(manifests: list[Path]) -> None:
    train = load_real(manifests, "train")
    own = {p: {(train.label_maps[i] == BACKGROUND).tobytes()
               for i, r in enumerate(train.records)
               if r.source == FPDB_SOURCE and r.plane == p} for p in ("TV", "TT", "TC")}
    assert any(b"\x01" in m for masks in own.values() for m in masks)  # sectors exist
    drawn = _synthetic_layouts(train, ("TV", "TT", "TC"), 9, seed=1, mode="sector")
    assert [x.plane for x in drawn] == ["TV", "TT", "TC"] * 3 and all(
        x.ga_weeks is None for x in drawn)
    for x in drawn:
        # the sector of a training scan of the same plane, nothing else said
        assert set(np.unique(x.label_map).tolist()) <= {BACKGROUND, UNLABELLED}
        assert (x.label_map == BACKGROUND).tobytes() in own[x.plane]
    again = _synthetic_layouts(train, ("TV", "TT", "TC"), 9, seed=1, mode="sector")
    assert all(np.array_equal(a.label_map, b.label_map) for a, b in zip(drawn, again,
                                                                       strict=True))
    empty = _synthetic_layouts(train, ("AC",), 2, seed=1, mode="empty")
    assert all((x.label_map == UNLABELLED).all() and x.plane == "AC" for x in empty)
    with pytest.raises(ValueError, match="no FETAL_PLANES_DB training scan of plane LIP"):
        _synthetic_layouts(train, ("LIP",), 1, seed=1, mode="sector")
    with pytest.raises(ValueError, match="synth_layouts"):
        RealDownstreamOptions(synth_layouts="random")
    with pytest.raises(ValueError, match="reader_real_share"):
        RealDownstreamOptions(reader_real_share=0.0)


def test_every_task_arm_and_resume(tmp_path: Path, tiny_weights: Path,
                                   manifests: list[Path]) -> None:
    torch.manual_seed(0)
    m = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real")))
    load_initial(m, tiny_weights)
    m.save(tmp_path / "w")
    engine = Engine(load_backend("torch", tmp_path / "w"))
    opts = RealDownstreamOptions(head_sizes=(2, 0), plane_sizes=(1, 0), seeds=(0, 1),
                                 segmenter_steps=2, reader_steps=2, synth_heads=4,
                                 synth_per_class=2, microcephaly_heads=2, bootstrap=20,
                                 batch=4)
    logs: list[str] = []
    res = evaluate_downstream_real(engine, manifests, tmp_path / "ev", opts, log=logs.append)
    assert set(res["heads"]["cells"]) == {"real N=2", "real+synthetic N=2", "real N=all",
                                          "real+synthetic N=all", "synthetic"}
    small = res["heads"]["cells"]["real N=2"]
    assert small["n_real"] == 2 and small["n_synthetic"] == 0 and small["seeds"] == 2
    assert res["heads"]["cells"]["synthetic"]["n_real"] == 0
    assert 0 <= small["dice"] <= 1 and small["dice_interval"][0] <= small["dice_interval"][1]
    # paired differences: on the same scans, so their mean is the difference of the cells'
    cells = res["heads"]["cells"]
    assert set(res["heads"]["paired"]) == {"N=2", "N=all"}
    dd = res["heads"]["paired"]["N=all"]["dice"]
    assert dd["mean"] == pytest.approx(cells["real+synthetic N=all"]["dice"]
                                       - cells["real N=all"]["dice"])
    assert dd["n_scans"] == res["heads"]["n_val_heads"]
    planes = res["planes"]
    pa = planes["paired"]["N=1/class"]["accuracy"]
    assert pa["mean"] == pytest.approx(planes["cells"]["real+synthetic N=1/class"]["accuracy"]
                                       - planes["cells"]["real N=1/class"]["accuracy"])
    assert pa["interval"][0] <= pa["mean"] <= pa["interval"][1]
    assert list(planes["classes"]) == ["abdomen", "brain", "femur", "thorax"]
    assert planes["cells"]["real N=1/class"]["n_real"] == 4
    assert planes["cells"]["real+synthetic N=1/class"]["n_synthetic"] == 8
    assert 0 <= planes["cells"]["synthetic"]["macro_f1"] <= 1
    assert list(res["brain_planes"]["classes"]) == ["TV", "TT", "TC"]
    micro = res["microcephaly"]
    assert set(micro["rows"]) == {"x1", "x0.75"} and "no labelled" in micro["cannot_measure"]
    assert micro["rows"]["x0.75"]["requested_hc_mm"] < micro["rows"]["x1"]["requested_hc_mm"]
    md = markdown(res)
    assert "Head segmentation" in md and "macro-F1" in md and "Cannot be measured" in md
    assert "paired on the same validation scans" in md and "- N=all: Dice " in md
    saved = json.loads((tmp_path / "ev" / "real_downstream.json").read_text())
    assert json.dumps(saved["heads"]) == json.dumps(res["heads"])  # NaN where none read
    # a second run trains nothing and generates nothing again
    logs.clear()
    again = evaluate_downstream_real(engine, manifests, tmp_path / "ev", opts, log=logs.append)
    assert logs == [] and json.dumps(again["planes"]) == json.dumps(res["planes"])
    # another seed list reuses the finished seeds
    more = RealDownstreamOptions(**{**opts.__dict__, "seeds": (0,), "parts": ("heads",)})
    one = evaluate_downstream_real(engine, manifests, tmp_path / "ev", more, log=logs.append)
    assert logs == [] and one["heads"]["cells"]["synthetic"]["seeds"] == 1
    # a new option at its default keeps the cells; set, it trains its own
    same = RealDownstreamOptions(**{**opts.__dict__, "parts": ("planes",),
                                    "synth_layouts": "empty", "reader_real_share": None})
    evaluate_downstream_real(engine, manifests, tmp_path / "ev", same, log=logs.append)
    assert logs == []
    mixed = RealDownstreamOptions(**{**same.__dict__, "reader_real_share": 0.5})
    evaluate_downstream_real(engine, manifests, tmp_path / "ev", mixed, log=logs.append)
    assert any("real+synthetic N=1/class seed 0" in m for m in logs)
    logs.clear()
    seg_mixed = RealDownstreamOptions(**{**opts.__dict__, "parts": ("heads",),
                                         "segmenter_real_share": None})
    evaluate_downstream_real(engine, manifests, tmp_path / "ev", seg_mixed, log=logs.append)
    assert logs == []
    seg_mixed = RealDownstreamOptions(**{**seg_mixed.__dict__, "segmenter_real_share": 0.5})
    half = evaluate_downstream_real(engine, manifests, tmp_path / "ev", seg_mixed,
                                    log=logs.append)
    assert any("heads real+synthetic N=2 seed 0" in m for m in logs)
    assert "batches 50% real in real+synthetic; segmenter" in markdown(half)


def test_the_command_writes_report_and_figure(tmp_path: Path, tiny_weights: Path,
                                              manifests: list[Path]) -> None:
    from fetalflex.cli import main

    m = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real")))
    load_initial(m, tiny_weights)
    m.save(tmp_path / "w")
    rc = main(["evaluate-downstream-real", "--data", *map(str, manifests), "--weights",
               str(tmp_path / "w"), "--out", str(tmp_path / "o"), "--head-sizes", "2",
               "--plane-sizes", "1", "--seeds", "0", "--segmenter-steps", "1",
               "--reader-steps", "1", "--synth-heads", "2", "--synth-per-class", "1",
               "--reader-real-share", "0.5", "--synth-layouts", "sector",
               "--parts", "heads", "planes"])
    assert rc == 0
    assert (tmp_path / "o" / "real_downstream.png").stat().st_size > 10_000
    md = (tmp_path / "o" / "real_downstream.md").read_text()
    assert "Plane classification" in md and "layouts: sector" in md
    assert "batches 50% real in real+synthetic; reader 1 steps" in md
