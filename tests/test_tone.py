"""Tone curves (``fetalflex.io.tone``): fitted by quantile mapping, validated by
name, and applied by the engine to generated pixels only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fetalflex.backends.backends import load_backend
from fetalflex.generation import Engine, GenerationRequest
from fetalflex.io.tone import (
    apply_tone,
    check_tone_curve,
    fit_tone_curve,
    identity_curve,
)
from fetalflex.model.config import DenoiserConfig
from tests.conftest import TINY_MODEL


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_fit_recovers_a_monotone_map_and_leaves_equal_distributions_alone() -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, size=(40, 32, 32)).astype(np.uint8)
    src[:, :8] = rng.integers(0, 6, size=(40, 8, 32))  # a dark band, like a faint haze
    haze_to_black = np.clip(np.arange(256) - 3, 0, 255).astype(np.uint8)  # 0..3 -> 0
    curve = fit_tone_curve(src, haze_to_black[src])
    assert np.array_equal(np.asarray(curve), haze_to_black)
    assert fit_tone_curve(src, src) == identity_curve()
    # a target drawn independently from the same distribution: within a level or two
    other = rng.permutation(src.ravel()).reshape(src.shape)
    assert np.abs(np.subtract(fit_tone_curve(src, other), identity_curve())).max() <= 2
    with pytest.raises(TypeError, match="uint8"):
        fit_tone_curve(src.astype(np.int16), src)  # type: ignore[arg-type]


def test_apply_and_check_name_what_is_wrong() -> None:
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert apply_tone(img, None) is img
    assert np.array_equal(apply_tone(img, [255] * 256), np.full((16, 16), 255))
    with pytest.raises(ValueError, match="needs 256 output levels"):
        check_tone_curve([0, 1, 2])
    bad = list(range(256))
    bad[10] = 2
    with pytest.raises(ValueError, match="never decrease.*level 9 -> 9 but 10 -> 2"):
        check_tone_curve(bad)
    with pytest.raises(ValueError, match=r"within \[0, 255\]"):
        check_tone_curve([0] * 255 + [300])
    cfg = dict(TINY_MODEL, appearances=["phantom", "real"],
               sampling={"tone_curve": {"real": bad}})
    with pytest.raises(ValueError, match="sampling.tone_curve.real: must never decrease"):
        DenoiserConfig.model_validate(cfg)
    cfg["sampling"] = {"tone_curve_by_plane": {"real": {"XX": list(range(256))}}}
    with pytest.raises(ValueError, match="tone_curve_by_plane.real: unknown plane 'XX'"):
        DenoiserConfig.model_validate(cfg)
    cfg["sampling"] = {"tone_curve_by_plane": {"real": {"AC": [0, 1]}}}
    with pytest.raises(ValueError, match="tone_curve_by_plane.real.AC: needs 256"):
        DenoiserConfig.model_validate(cfg)


def _with_curve(weights: Path, out: Path, curve: list[int],
                by_plane: dict[str, list[int]] | None = None) -> Path:
    shutil.copytree(weights, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.setdefault("sampling", {})["tone_curve"] = {"phantom": curve}
    if by_plane:
        cfg["sampling"]["tone_curve_by_plane"] = {"phantom": by_plane}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_engine_applies_the_curve_to_generated_pixels_only(tiny_weights: Path,
                                                          tmp_path: Path) -> None:
    """Every sampled image goes through the weights' curve; a twin keeps the reference's
    bytes outside its region and gets the curve inside; the model id changes with it."""
    invert_low = [0 if v < 128 else 255 for v in range(256)]  # monotone, two levels
    plain = Engine(load_backend("torch", tiny_weights))
    toned = Engine(load_backend("torch", _with_curve(tiny_weights, tmp_path / "w",
                                                     invert_low)))
    assert toned.backend.model_hash != plain.backend.model_hash
    req = GenerationRequest(plane="TV", steps=3, seed=5)
    a, b = plain.run(req).samples[0].image, toned.run(req).samples[0].image
    assert np.array_equal(b, np.asarray(invert_low, np.uint8)[a])
    imgs, _ = toned.sample_layouts([toned.anatomy_for(req, None)[0].normal], [5], steps=3)
    assert np.array_equal(imgs[0], b)
    pair = toned.run(GenerationRequest(plane="TV", preset="hydrocephalus", pair=True, steps=3,
                                       repaint={"steps": 4, "jump_length": 2})).samples[0]
    assert pair.abnormal_image is not None and pair.region is not None
    assert set(np.unique(pair.abnormal_image[pair.region])) <= {0, 255}
    assert np.array_equal(pair.abnormal_image[~pair.region], pair.image[~pair.region])
    ref = np.full((32, 32), 77, np.uint8)  # a user's pixels: 77 is not a level of the curve
    lay = toned.anatomy_for(GenerationRequest(plane="TV"), None)[0].normal
    region = np.zeros((32, 32), bool)
    region[8:16, 8:16] = True
    twins, _ = toned.repaint(ref[None], [lay], [region], [1])
    assert (twins[0][~region] == 77).all()
    assert set(np.unique(twins[0][region])) <= {0, 255}


def test_a_planes_own_curve_replaces_the_appearances(tiny_weights: Path, tmp_path: Path
                                                     ) -> None:
    """Requests, batches and twins of a plane with its own curve get that curve; the other
    planes get the appearance's."""
    pooled, ac_own = [0 if v < 128 else 255 for v in range(256)], [9] * 256
    plain = Engine(load_backend("torch", tiny_weights))
    toned = Engine(load_backend("torch", _with_curve(tiny_weights, tmp_path / "w", pooled,
                                                     {"AC": ac_own})))
    assert toned.tone_curve("phantom", "AC") == tuple(ac_own)
    assert toned.tone_curve("phantom", "TV") == tuple(pooled) == toned.tone_curve("phantom")
    ac = GenerationRequest(plane="AC", steps=2, seed=1)
    assert (toned.run(ac).samples[0].image == 9).all()
    lay = toned.anatomy_for(ac, None)[0].normal
    assert (toned.sample_layouts([lay], [1], steps=2)[0] == 9).all()
    tv = GenerationRequest(plane="TV", steps=2, seed=1)
    assert np.array_equal(toned.run(tv).samples[0].image,
                          np.asarray(pooled, np.uint8)[plain.run(tv).samples[0].image])
    region = np.zeros((32, 32), bool)
    region[4:12, 4:12] = True
    twins, _ = toned.repaint(np.full((1, 32, 32), 77, np.uint8), [lay], [region], [1])
    assert (twins[0][region] == 9).all() and (twins[0][~region] == 77).all()
