"""The shipped demo weights load, run on the embedded default and say what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.anatomy.structures import label_id
from fetalflex.backends.backends import load_backend
from fetalflex.evaluation.segmenter import Segmenter
from fetalflex.generation import Engine, GenerationRequest
from fetalflex.weights import DEFAULT_WEIGHTS

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
    size = eng.cfg.image_size
    assert size >= 128, "the shipped model is v2 (128 x 128 or more)"
    assert img.shape == (size, size) and img.std() > 10
    seg = Segmenter.load(WEIGHTS / "segmenter")
    assert seg.config.image_size == size  # the evaluator reads the generator's size
    x = torch.from_numpy(img.astype(np.float32)[None, None] / 127.5 - 1)
    read = seg.predict(x, plane="TV")
    assert read.shape == (1, size, size)
    # The requested anatomy is read back from the image: the skull ring and the brain.
    lab = res.samples[0].layout.label_map
    for name in ("skull", "brain"):
        lid = label_id(name)
        inter = np.logical_and(read[0] == lid, lab == lid).sum()
        assert 2 * inter / ((read[0] == lid).sum() + (lab == lid).sum()) > 0.5, name
