"""The shipped demo weights load, run on the embedded default and say what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.backends.backends import DEFAULT_WEIGHTS, load_backend
from fetalflex.evaluation.segmenter import Segmenter
from fetalflex.generation import Engine, GenerationRequest

WEIGHTS = DEFAULT_WEIGHTS.parent


def test_files_are_small_and_documented() -> None:
    for f in WEIGHTS.rglob("*.safetensors"):
        assert f.stat().st_size < 40 * 2**20, f
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    assert "Phantom world only. Not for clinical use." in card


def test_embedded_default_generates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path))
    eng = Engine(load_backend())
    res = eng.run(GenerationRequest(plane="TV", steps=6, seed=2))
    img = res.samples[0].image
    assert img.shape == (64, 64) and img.std() > 10
    seg = Segmenter.load(WEIGHTS / "segmenter")
    x = torch.from_numpy(img.astype(np.float32)[None, None] / 127.5 - 1)
    read = seg.predict(x, plane="TV")
    assert read.shape == (1, 64, 64)
