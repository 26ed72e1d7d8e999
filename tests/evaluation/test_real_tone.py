"""``fetalflex calibrate-real`` (``fetalflex.evaluation.real_tone``): the real-appearance tone
curve fitted on real training scans only, written as new weights, refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.backends.backends import load_backend
from fetalflex.evaluation.real_data import load_real
from fetalflex.evaluation.real_tone import REPORT_NAME, calibrate_real
from fetalflex.evaluation.realism import grey_w1
from fetalflex.generation import Engine, GenerationRequest
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.training.init_weights import load_initial
from tests.conftest import TINY_MODEL
from tests.real_fixtures import imported_manifests


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return imported_manifests(tmp_path_factory.mktemp("real_tone"), n_subjects=8)


def _real_weights(tiny_weights: Path, out: Path) -> Path:
    torch.manual_seed(0)
    m = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real")))
    load_initial(m, tiny_weights)
    m.save(out)
    return out


def test_calibrated_weights_write_real_grey_levels_and_keep_their_tensors(
        tiny_weights: Path, manifests: list[Path], tmp_path: Path) -> None:
    w = _real_weights(tiny_weights, tmp_path / "w")
    engine = Engine(load_backend("torch", w))
    rep = calibrate_real(engine, w, manifests, tmp_path / "cal", n=6, plane_min=0,
                         log=lambda _m: None)
    out = tmp_path / "cal"
    assert (out / "model.safetensors").read_bytes() == (w / "model.safetensors").read_bytes()
    assert json.loads((out / REPORT_NAME).read_text()) == json.loads(json.dumps(rep))
    assert rep["scans"] == 6 and sum(rep["planes"].values()) == 6
    assert rep["calibrated"]["w1_to_real"] < 0.5 * rep["generated"]["w1_to_real"]
    cal = Engine(load_backend("torch", out))
    assert cal.tone_curve("real") is not None and cal.tone_curve("phantom") is None
    # validation scans are never read: without their files the same curve comes out
    from fetalflex.data.manifest import read_manifest, resolve

    no_val = []
    for m in manifests:
        copy = tmp_path / "no_val" / m.parent.name
        shutil.copytree(m.parent, copy)
        for r in read_manifest(copy / m.name, check_files=False):
            if r.split == "val":
                resolve(copy, r.image).unlink()
        no_val.append(copy / m.name)
    blind = calibrate_real(engine, w, no_val, tmp_path / "cal_blind", n=6, plane_min=0,
                           log=lambda _m: None)
    assert blind["calibrated"] == rep["calibrated"]
    assert (json.loads((tmp_path / "cal_blind" / "config.json").read_text())["sampling"]
            == json.loads((out / "config.json").read_text())["sampling"])
    # the curve acts on what these weights sample
    train = load_real(manifests, "train")
    lay = [train.layout(i) for i in range(4) if train.records[i].plane == train.records[0].plane]
    raw, _ = engine.sample_layouts(lay, list(range(len(lay))), appearance="real")
    toned, _ = cal.sample_layouts(lay, list(range(len(lay))), appearance="real")
    assert np.array_equal(toned, np.asarray(cal.tone_curve("real"), np.uint8)[raw])
    assert grey_w1(toned, train.images) <= grey_w1(raw, train.images) + 1e-9
    # the phantom look is untouched
    req = GenerationRequest(plane="TV", appearance="phantom", steps=2)
    assert np.array_equal(engine.run(req).samples[0].image, cal.run(req).samples[0].image)
    # calibrating the calibrated weights again composes: the fit starts from what they write
    rep2 = calibrate_real(cal, out, manifests, tmp_path / "cal2", n=6, plane_min=0,
                          log=lambda _m: None)
    assert rep2["generated"]["w1_to_real"] == pytest.approx(rep["calibrated"]["w1_to_real"])


def test_refusals_name_the_field(tiny_weights: Path, manifests: list[Path],
                                 tmp_path: Path) -> None:
    from fetalflex.cli import main

    phantom_only = Engine(load_backend("torch", tiny_weights))
    with pytest.raises(ValueError, match="do not serve the real appearance"):
        calibrate_real(phantom_only, tiny_weights, manifests, tmp_path / "x")
    w = _real_weights(tiny_weights, tmp_path / "w")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert main(["calibrate-real", "--weights", str(w), "--data", *map(str, manifests),
                 "--out", str(tmp_path / "busy"), "--n", "4"]) != 0
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert main(["calibrate-real", "--weights", str(w), "--data", *map(str, manifests),
                 "--out", str(tmp_path / "ok"), "--n", "4"]) == 0
    assert (tmp_path / "ok" / "config.json").is_file()
    assert main(["calibrate-real", "--weights", str(w), "--data", *map(str, manifests),
                 "--out", str(tmp_path / "dark"), "--n", "4", "--darken-below", "64"]) == 0
    dark = json.loads((tmp_path / "dark" / REPORT_NAME).read_text())
    assert dark["darken_below"] == 64
    curve = json.loads((tmp_path / "dark" / "config.json").read_text())["sampling"][
        "tone_curve"]["real"]
    assert curve[64:] == list(range(64, 256))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ok-")]  # no leftovers


def test_planes_with_enough_scans_get_their_own_curve(tiny_weights: Path,
                                                      manifests: list[Path],
                                                      tmp_path: Path) -> None:
    w = _real_weights(tiny_weights, tmp_path / "w")
    engine = Engine(load_backend("torch", w))
    rep = calibrate_real(engine, w, manifests, tmp_path / "cal", n=8, plane_min=3,
                         log=lambda _m: None)
    own = {p for p, k in rep["planes"].items() if k >= 3}
    assert own and set(rep["own_curve_planes"]) == own
    cfg = json.loads((tmp_path / "cal" / "config.json").read_text())["sampling"]
    assert set(cfg["tone_curve_by_plane"]["real"]) == own and "real" in cfg["tone_curve"]
    for p in own:  # each fitted on its own scans: at least as close to them as before
        row = rep["own_curve_planes"][p]
        assert row["calibrated"]["w1_to_real"] <= row["generated"]["w1_to_real"] + 1e-9
    cal = Engine(load_backend("torch", tmp_path / "cal"))
    with pytest.raises(ValueError, match="already carry per-plane real tone curves"):
        calibrate_real(cal, tmp_path / "cal", manifests, tmp_path / "again")


def test_darken_only_below_keeps_mid_tones_and_stays_monotone() -> None:
    from fetalflex.evaluation.real_tone import darken_only_below
    from fetalflex.io.tone import check_tone_curve

    stretch = tuple(int(min(255, max(0, round((v - 10) * 1.3)))) for v in range(256))
    got = darken_only_below(stretch, 64)
    check_tone_curve(got)
    assert got[:8] == (0,) * 8  # the dark end still goes black
    assert all(g <= v for v, g in enumerate(got))  # never brightens
    assert got[64:] == tuple(range(64, 256))  # mid-tones and highlights untouched
    assert darken_only_below(stretch, 0) == stretch
