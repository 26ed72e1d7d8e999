"""``fetalflex evaluate-real`` end to end on small stand-ins of the real data layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.backends.backends import load_backend
from fetalflex.evaluation.head import circumference_mm, dice, mask_ellipse
from fetalflex.evaluation.options import RealEvalOptions
from fetalflex.evaluation.real import evaluate_real
from fetalflex.evaluation.realism import (
    frechet_distance,
    grey_w1,
    nearest_correlation,
    split_halves,
)
from fetalflex.generation import Engine
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.reports.real_report import markdown
from fetalflex.training.init_weights import load_initial
from tests.conftest import TINY_MODEL
from tests.real_fixtures import imported_manifests


def test_realism_measures() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (200, 3)), rng.normal(0, 1, (200, 3))
    assert frechet_distance(a, b) < 0.2
    assert frechet_distance(a, b + 2.0) == pytest.approx(12.0, rel=0.15)
    dark = np.zeros((2, 8, 8), dtype=np.uint8)
    assert grey_w1(dark, dark + 10) == pytest.approx(10.0)
    imgs = rng.integers(0, 255, (5, 64, 64), dtype=np.uint8)
    assert nearest_correlation(imgs[:2], imgs, side=16) == pytest.approx([1.0, 1.0])
    x, y = split_halves(["s1", "s1", "s2", "s3"], seed=0)
    assert len(x) + len(y) == 4 and not set(x) & set(y)
    assert {0, 1} <= set(x.tolist()) or {0, 1} <= set(y.tolist())


def test_frd_runs_in_another_interpreter(tmp_path: Path) -> None:
    """The FRD rows may use an interpreter of their own (frd-score needs pyradiomics): its
    answer is read back, and its failure is an error, not a number."""
    from fetalflex.evaluation.realism import frd

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\n[ -d \"$3\" ] && [ -d \"$4\" ] && echo 'FRD=2.5' && exit 0\n"
                    "echo broken >&2; exit 1\n")
    fake.chmod(0o755)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert frd(tmp_path / "a", tmp_path / "b", str(fake)) == 2.5
    with pytest.raises(RuntimeError, match="broken"):
        frd(tmp_path / "a", tmp_path / "missing", str(fake))


def test_head_measure_reads_an_ellipse() -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    m = ((xx - 30) / 20.0) ** 2 + ((yy - 33) / 12.0) ** 2 <= 1
    e = mask_ellipse(m)
    assert e is not None and (e.a, e.b) == pytest.approx((20, 12), rel=0.05)
    assert circumference_mm(m, 0.5) == pytest.approx(0.5 * e.circumference())
    assert np.isnan(circumference_mm(np.zeros((8, 8), bool), 1.0))
    assert dice(m, m) == 1.0 and dice(m, ~m) == 0.0


@pytest.fixture(scope="module")
def real_manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return imported_manifests(tmp_path_factory.mktemp("real"), n_subjects=12)


def test_evaluate_real_measures_every_row_and_keeps_its_instruments(
        tmp_path: Path, tiny_weights: Path, real_manifests: list[Path]) -> None:
    torch.manual_seed(0)
    m = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real")))
    load_initial(m, tiny_weights)
    m.save(tmp_path / "w")
    engine = Engine(load_backend("torch", tmp_path / "w"))
    opts = RealEvalOptions(reader_steps=3, segmenter_steps=3, fd_dims=2, batch=4,
                           bootstrap=50, twins_per_plane=1)
    res = evaluate_real(engine, real_manifests, tmp_path / "ev", opts, log=lambda _m: None)
    assert res["appearance"] == "real" and res["n_val"] > 0
    assert set(res["instrument_training_s"]) == {"reader", "segmenter"}
    assert "TT" in res["planes"] and 0 <= res["planes"]["TT"]["generated_accuracy"] <= 1
    head = res["head"]
    assert head["n"] > 0 and 0 <= head["generated"]["dice"] <= 1
    assert res["copying"]["real_val_max"] <= 1.0 + 1e-9
    # every preset's twin is measured in the requested appearance
    assert "TV ventriculomegaly" in res["twins"] and "LIP cleft_lip" in res["twins"]
    assert all(isinstance(r["sign_ok"], bool) for r in res["twins"].values())
    md = markdown(res)
    assert "Plane reader" in md and "Head outline control" in md
    assert res["frd"].startswith("not measured: frd-score") and res["frd"] in md
    saved = json.loads((tmp_path / "ev" / "real_eval.json").read_text())
    assert saved["model"] == engine.backend.model_hash
    # a second run reuses the trained instruments and the generated scans
    again = evaluate_real(engine, real_manifests, tmp_path / "ev", opts, log=lambda _m: None)
    assert again["instrument_training_s"] == {}
    assert again["planes"] == res["planes"]
    # the sampling is recorded as it ran
    assert res["sampling"]["steps"] >= 1 and res["sampling"]["guidance"] == res["guidance"]
    assert res["sampling"]["precision"] == "fp32"
    # another generation seed (and sampling): the same instruments (kept), other draws of
    # the same requests
    from dataclasses import replace

    other = evaluate_real(engine, real_manifests, tmp_path / "ev",
                          replace(opts, generation_seed=1, steps=2, sampler="ddim"),
                          log=lambda _m: None)
    assert other["instrument_training_s"] == {} and other["options"]["generation_seed"] == 1
    assert (other["sampling"]["sampler"], other["sampling"]["steps"]) == ("ddim", 2)
    assert "ddim 2 steps" in markdown(other)
    drawn = sorted((tmp_path / "ev" / "cache").glob("generated-*.npz"))
    assert len(drawn) == 2
    a, b = (np.load(f)["images"] for f in drawn)
    assert a.shape == b.shape and not np.array_equal(a, b)
    # the int8 graph of the same weights: its own draws (not the fp32 cache), named as such
    import os

    os.environ["FETALFLEX_CACHE"] = str(tmp_path / "onnx")
    try:
        int8 = Engine(load_backend("embedded", tmp_path / "w", precision="int8"))
        q = evaluate_real(int8, real_manifests, tmp_path / "ev", opts, log=lambda _m: None)
    finally:
        del os.environ["FETALFLEX_CACHE"]
    assert q["sampling"]["precision"] == "int8" and "int8 graph" in markdown(q)
    assert len(sorted((tmp_path / "ev" / "cache").glob("generated-*.npz"))) == 3
    # the v1-v3 style weights (no appearances) refuse the real appearance by name
    plain = Engine(load_backend("torch", tiny_weights))
    with pytest.raises(ValueError, match="appearance: 'real' is not served"):
        evaluate_real(plain, real_manifests, tmp_path / "ev2", opts, log=lambda _m: None)
