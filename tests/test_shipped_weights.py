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


def _head_ring_contrast(engine: Engine) -> tuple[float, int]:
    """A real-look TT scan of a layout that labels a head ring and nothing else: the ring's
    mean grey minus its inside's, and the denoiser calls it took (the weights' sampling)."""
    from fetalflex.anatomy.layout import Shape, StructureList, rasterize, shape_mask

    head = Shape(structure="skull", kind="ring", center=(0.5, 0.5), axes=(0.3, 0.22))
    layout = rasterize(StructureList(plane="TT", field_mm=150, fill="unlabelled",
                                     structures=(head,)), engine.cfg.image_size)
    img, calls = engine.sample_layouts([layout], [0], appearance="real")
    ring = shape_mask(head, engine.cfg.image_size)
    inside = shape_mask(head.model_copy(update={"axes": (0.2, 0.12), "kind": "ellipse"}),
                        engine.cfg.image_size)
    return float(img[0][ring].mean() - img[0][inside].mean()), calls


def test_real_appearance_weights_follow_a_head_outline(tmp_path: Path) -> None:
    """The real-appearance weights (v5) serve both looks; a partial layout (a head ring,
    nothing else) gives a TT scan whose head the outline bounds (brighter ring than its
    inside)."""
    from fetalflex.weights import REAL_WEIGHTS

    torch.set_num_threads(2)
    engine = Engine(load_backend("torch", REAL_WEIGHTS))
    assert engine.cfg.appearances == ("phantom", "real")
    assert engine.appearance(None) == "real"
    assert _head_ring_contrast(engine)[0] > 10


def test_the_real_student_draws_a_head_outline_in_four_rows() -> None:
    """The 4-row student of v6 serves both looks with guidance folded in: a request that
    leaves the sampling unset costs 4 denoiser rows, and a head ring in the real look still
    bounds a brighter skull than its inside."""
    from fetalflex.weights import REAL_STUDENT_WEIGHTS

    torch.set_num_threads(2)
    engine = Engine(load_backend("torch", REAL_STUDENT_WEIGHTS))
    rec = engine.cfg.sampling
    assert engine.cfg.appearances == ("phantom", "real")
    assert (rec.steps, rec.guidance, rec.sampler, rec.guidance_folded) == (4, 1.0, "ddim", True)
    contrast, calls = _head_ring_contrast(engine)
    assert calls == 4  # one conditional row per step
    assert contrast > 10
