from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fetalflex.backends.backends import load_backend
from fetalflex.evaluation.evaluate import evaluate
from fetalflex.evaluation.metrics import histogram_distance, mean_dice, structure_dice
from fetalflex.evaluation.options import EvalOptions
from fetalflex.evaluation.segmenter import train_segmenter
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from tests.conftest import TINY_MODEL


def test_dice_metrics() -> None:
    a = np.zeros((8, 8), np.uint8)
    a[2:6, 2:6] = 30  # femur
    b = a.copy()
    assert mean_dice(a, b, "FL") == 1.0
    b[2:4, 2:6] = 29
    assert structure_dice(a, b, [30]) == {30: 2 * 8 / (16 + 8)}
    assert histogram_distance([1 / 256] * 32, [1 / 256] * 32) == 0.0


def test_evaluate_end_to_end(tiny_data: Path, tmp_path: Path) -> None:
    from fetalflex.data.phantom_set import write_phantom_set

    eval_data = write_phantom_set(tmp_path / "eval", 8, planes=("TV", "FL"), size=32, seed=8,
                                  abnormal_fraction=0.25, workers=1)
    seg = train_segmenter(tiny_data, tmp_path / "seg", steps=3, batch_size=4, progress=False)
    FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL)).save(tmp_path / "den")
    backend = load_backend("torch", tmp_path / "den")
    opts = EvalOptions(n_per_plane=2, steps=(2, 3), default_steps=2, planes=("TV", "FL"),
                       twins_per_preset=1)
    res = evaluate(backend, seg, eval_data, tmp_path / "ev", opts)
    assert set(res["planes"]) == {"TV", "FL"}
    assert res["summary"]["denoiser_calls"] > 0
    data = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    tv = data["planes"]["TV"]
    assert [q["steps"] for q in tv["by_steps"]] == [2, 3]
    # Calls: 2 layouts x (2 + 3 steps), one batched call per step: 2 + 3 calls per plane
    assert tv["by_steps"][0]["denoiser_calls"] == 2 and tv["by_steps"][1]["denoiser_calls"] == 3
    # A second phantom of the same layout ranks structure brightness like the first.
    assert tv["brightness_corr_ceiling"] > 0.8
    assert tv["twins"], "every preset of the plane gets a twin row"
    assert set(res["summary"]["by_steps"]) == {"2", "3"}
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "| TV |" in md and "Anomaly twins" in md
    for name in ("sample_grid.png", "steps.png", "twins.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 1000


def test_results_do_not_depend_on_the_batch(tiny_weights: Path, tiny_eval_data: Path) -> None:
    from fetalflex.data.manifest import read_manifest
    from fetalflex.evaluation.evaluate import _layouts
    from fetalflex.generation import Engine

    recs = [r for r in read_manifest(tiny_eval_data) if r.plane == "TV"][:2]
    layouts, _ = _layouts(recs, tiny_eval_data.parent)
    engine = Engine(load_backend("torch", tiny_weights))
    both, _ = engine.sample_layouts(layouts, [5, 6], steps=2)
    one, _ = engine.sample_layouts(layouts[1:], [6], steps=2)
    assert np.array_equal(both[1], one[0])


def test_brightness_correlation_reads_structures() -> None:
    from fetalflex.evaluation.evaluate import brightness_correlation

    m = np.zeros((32, 32), np.uint8)
    m[:, :8], m[:, 8:16], m[:, 16:24], m[:, 24:] = 1, 2, 3, 4
    img = (m.astype(np.float64) * 40).astype(np.uint8)
    assert brightness_correlation(img, img, m) == 1.0
    assert brightness_correlation(255 - img, img, m) == -1.0


def test_plane_restricted_reading(tiny_data: Path, tmp_path: Path) -> None:
    import torch

    from fetalflex.anatomy.planes import plane
    from fetalflex.evaluation.segmenter import Segmenter

    seg = Segmenter.load(train_segmenter(tiny_data, tmp_path / "seg", steps=2, batch_size=4,
                                         progress=False))
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    read = seg.predict(x, plane="FL")
    assert set(np.unique(read).tolist()) <= set(plane("FL").label_ids)


def test_evaluate_asks_for_the_appearance(tiny_data: Path, tmp_path: Path) -> None:
    """The phantom-world evaluation draws the look it is told (phantom by default, the
    look its references have); weights that do not serve a look refuse it by name."""
    import pytest

    from fetalflex.data.phantom_set import write_phantom_set
    from fetalflex.errors import InvalidRequestError

    eval_data = write_phantom_set(tmp_path / "eval", 4, planes=("FL",), size=32, seed=8,
                                  workers=1)
    seg = train_segmenter(tiny_data, tmp_path / "seg", steps=2, batch_size=4, progress=False)
    FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL)).save(tmp_path / "plain")
    opts = EvalOptions(n_per_plane=2, steps=(2,), default_steps=2, planes=("FL",),
                       twins_per_preset=0, appearance="real")
    with pytest.raises(InvalidRequestError, match="appearance"):
        evaluate(load_backend("torch", tmp_path / "plain"), seg, eval_data, tmp_path / "e0",
                 opts)
    FetalFlexDenoiser(DenoiserConfig(**{**TINY_MODEL, "appearances": ["phantom", "real"]})
                      ).save(tmp_path / "looks")
    backend = load_backend("torch", tmp_path / "looks")
    real = evaluate(backend, seg, eval_data, tmp_path / "e1", opts)
    phantom = evaluate(backend, seg, eval_data, tmp_path / "e2",
                       EvalOptions(**{**opts.__dict__, "appearance": "phantom"}))
    assert (real["appearance"], phantom["appearance"]) == ("real", "phantom")
    assert "real appearance" in (tmp_path / "e1" / "evaluation.md").read_text()
    tex = [r["planes"]["FL"]["by_steps"][0]["texture_generated"] for r in (real, phantom)]
    assert tex[0] != tex[1]  # the look reached the sampler
