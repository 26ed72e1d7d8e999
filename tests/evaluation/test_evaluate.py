from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fetalflex.evaluation.evaluate import evaluate
from fetalflex.evaluation.metrics import histogram_distance, mean_dice, structure_dice
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


def test_evaluate_end_to_end(tiny_data: Path, tiny_eval_data: Path, tmp_path: Path) -> None:
    seg = train_segmenter(tiny_data, tmp_path / "seg", steps=3, batch_size=4, progress=False)
    FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL)).save(tmp_path / "den")
    res = evaluate(tmp_path / "den", seg, tiny_eval_data, tmp_path / "ev", n_per_plane=1,
                   steps=2, planes=("TV", "FL"))
    assert set(res["planes"]) == {"TV", "FL"}
    assert res["summary"]["denoiser_calls"] > 0
    data = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert 0.0 <= data["planes"]["TV"]["normal"]["adherence_dice"] <= 1.0
    assert "| TV |" in (tmp_path / "ev" / "evaluation.md").read_text()
    assert (tmp_path / "ev" / "sample_grid.png").exists()


def test_plane_restricted_reading(tiny_data: Path, tmp_path: Path) -> None:
    import torch

    from fetalflex.anatomy.planes import plane
    from fetalflex.evaluation.segmenter import Segmenter

    seg = Segmenter.load(train_segmenter(tiny_data, tmp_path / "seg", steps=2, batch_size=4,
                                         progress=False))
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    read = seg.predict(x, plane="FL")
    assert set(np.unique(read).tolist()) <= set(plane("FL").label_ids)
