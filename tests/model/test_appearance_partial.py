"""Partial anatomy ("not labelled here") and appearance conditioning, end to end: layout
encoding, the condition vector, fine-tuning from weights without appearances, training on a
mixed real + phantom manifest, and requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.anatomy.layout import (
    Layout,
    Shape,
    StructureList,
    extract,
    labelled_fraction,
    one_hot,
    rasterize,
)
from fetalflex.anatomy.sector import sector_mask
from fetalflex.anatomy.structures import BACKGROUND, BY_NAME, NUM_LABELS, UNLABELLED
from fetalflex.errors import InvalidRequestError
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser, condition_vector, drop_condition
from fetalflex.training.init_weights import load_initial
from tests.conftest import TINY_MODEL

SKULL = BY_NAME["skull"].id


def test_unlabelled_pixels_have_no_channel_on() -> None:
    lm = np.full((8, 8), UNLABELLED, dtype=np.uint8)
    lm[2:4, 2:4] = SKULL
    oh = one_hot(lm)
    assert oh.shape == (NUM_LABELS, 8, 8)
    assert oh[:, 0, 0].sum() == 0 and oh[SKULL, 2, 2] == 1 and oh[:, 2, 2].sum() == 1
    assert labelled_fraction(lm) == pytest.approx(4 / 64)
    Layout("TT", lm, 100.0)  # a partial map is a valid layout


def test_a_partial_structure_list_draws_only_what_it_lists() -> None:
    sl = StructureList(plane="TT", field_mm=120, fill="unlabelled", structures=(
        Shape(structure="skull", kind="ring", center=(0.5, 0.5), axes=(0.3, 0.2)),))
    lm = rasterize(sl, 64).label_map
    assert set(np.unique(lm).tolist()) == {SKULL, UNLABELLED, BACKGROUND}
    assert lm[32, 32] == UNLABELLED  # inside the ring: not said
    assert lm[32, 32 + int(0.3 * 64) - 1] == SKULL
    # the standard sector by default: outside our fan is background, inside not said
    np.testing.assert_array_equal(lm == BACKGROUND, ~sector_mask(64))
    bare = rasterize(sl.model_copy(update={"sector": "none"}), 64).label_map
    assert set(np.unique(bare).tolist()) == {SKULL, UNLABELLED}  # nothing said outside
    full = rasterize(sl.model_copy(update={"fill": "amniotic_fluid"}), 64).label_map
    assert UNLABELLED not in full
    np.testing.assert_array_equal(full == BACKGROUND, ~sector_mask(64))
    assert extract(Layout("TT", lm, 120.0)).sector == "standard"
    assert extract(Layout("TT", bare, 120.0)).sector == "none"
    with pytest.raises(ValueError, match="sector"):
        StructureList.model_validate({**sl.model_dump(), "sector": "fan"})


def test_condition_keeps_appearance_when_dropped() -> None:
    plane = torch.tensor([1, 2])
    ga = torch.tensor([20.0, float("nan")])
    app = torch.tensor([0, 1])
    cond = condition_vector(plane, ga, 7, app, 2)
    assert cond.shape == (2, 7 + 3 + 2)
    assert cond[:, -2:].tolist() == [[1, 0], [0, 1]]
    lay = torch.ones(2, NUM_LABELS, 4, 4)
    _, dropped, scale = drop_condition(lay, cond, torch.ones(2), torch.tensor([True, True]), 7)
    assert dropped[:, -2:].tolist() == [[1, 0], [0, 1]]  # the look is kept
    assert dropped[:, 7].tolist() == [1, 1] and scale.tolist() == [0, 0]  # null plane
    with pytest.raises(ValueError, match="appearance"):
        condition_vector(plane, ga, 7, None, 2)


def test_fine_tuning_start_grows_the_condition_without_changing_the_output(
        tmp_path: Path, tiny_weights: Path) -> None:
    old = FetalFlexDenoiser.load(tiny_weights).eval()
    new_cfg = DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real"))
    new = FetalFlexDenoiser(new_cfg)
    assert load_initial(new, tiny_weights) == {"copied": len(old.state_dict()) - 2, "grown": 2}
    new.eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 32, 32, generator=g)
    t = torch.tensor([100, 700])
    lay = torch.from_numpy(np.stack([one_hot(np.full((32, 32), 2, dtype=np.uint8))] * 2))
    plane, ga = torch.tensor([0, 3]), torch.tensor([22.0, float("nan")])
    with torch.no_grad():
        ref = old(x, t, lay, condition_vector(plane, ga, 7), torch.ones(2))
        for a in (0, 1):
            got = new(x, t, lay, condition_vector(plane, ga, 7, torch.full((2,), a), 2),
                      torch.ones(2))
            torch.testing.assert_close(got, ref)
    other = FetalFlexDenoiser(DenoiserConfig(**{**TINY_MODEL, "block_out_channels": [8, 8]}))
    with pytest.raises(ValueError, match="architecture differs .* block_out_channels"):
        load_initial(other, tiny_weights)


def test_condition_channels_start_silent_and_then_carry_the_plane(
        tmp_path: Path, tiny_weights: Path) -> None:
    old = FetalFlexDenoiser.load(tiny_weights).eval()
    cfg = DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real"), condition_channels=True)
    assert cfg.control_input_channels == NUM_LABELS + cfg.cond_dim
    new = FetalFlexDenoiser(cfg)
    # both class embeddings and the anatomy encoder's first convolution grow
    assert load_initial(new, tiny_weights)["grown"] == 3
    new.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 32, 32, generator=g)
    t = torch.tensor([300, 900])
    lay = torch.zeros(2, NUM_LABELS, 32, 32)  # nothing labelled: only the condition speaks
    plane, ga = torch.tensor([0, 5]), torch.tensor([22.0, float("nan")])
    with torch.no_grad():
        ref = old(x, t, lay, condition_vector(plane, ga, 7), torch.ones(2))
        got = new(x, t, lay, condition_vector(plane, ga, 7, torch.ones(2, dtype=torch.long), 2),
                  torch.ones(2))
        torch.testing.assert_close(got, ref)
        conv = new.anatomy_encoder.conv_in  # type: ignore[union-attr]
        conv.weight[:, NUM_LABELS:].normal_(0, 0.5)  # as if trained: planes now differ
        a = new(x, t, lay, condition_vector(plane, ga, 7, torch.ones(2, dtype=torch.long), 2),
                torch.ones(2))
        b = new(x, t, lay, condition_vector(plane + 1, ga, 7, torch.ones(2, dtype=torch.long),
                                            2), torch.ones(2))
    assert not torch.allclose(a, b)
    back = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real")))
    new.save(tmp_path / "with_channels")
    with pytest.raises(ValueError, match="condition_channels"):
        load_initial(back, tmp_path / "with_channels")


def test_training_on_real_and_phantom_records_never_reads_validation(
        tmp_path: Path, tiny_weights: Path) -> None:
    from fetalflex.data.importers.hc18 import import_hc18
    from fetalflex.data.phantom_set import write_phantom_set
    from fetalflex.training.config import StageConfig, TrainConfig
    from fetalflex.training.train import load_dataset, train
    from tests.real_fixtures import write_hc18

    write_hc18(tmp_path / "hc18", n_subjects=6)
    real = import_hc18(tmp_path / "hc18", tmp_path / "real", size=32, val_fraction=0.5)
    ph = write_phantom_set(tmp_path / "ph", 6, size=32, seed=1, workers=1)
    merged = tmp_path / "mix" / "manifest.jsonl"
    from fetalflex.cli import main

    assert main(["import", "merge", str(real / "manifest.jsonl"), str(ph), "--out",
                 str(merged)]) == 0
    cfg = TrainConfig.model_validate({
        "model": {**TINY_MODEL, "appearances": ["phantom", "real"]},
        "init_weights": str(tiny_weights), "base": {"steps": 0}, "prealign": {"steps": 0},
        "control": {"steps": 3, "warmup_steps": 1}, "batch_size": 4, "log_every": 1,
        "checkpoint_every": 10, "partial_anatomy_prob": 0.5, "precision": "fp32",
        "augment": {"prob": 0.5}})
    ds = load_dataset(cfg, merged)
    n_val = sum(1 for line in (real / "manifest.jsonl").read_text().splitlines()
                if json.loads(line)["split"] == "val")
    assert n_val > 0 and len(ds) == 7 + 6 - n_val
    assert {ds[i]["appearance"].item() for i in range(len(ds))} == {0, 1}
    final = train(cfg, merged, tmp_path / "run", stages=("control",), progress=False)
    w = FetalFlexDenoiser.load(final)
    assert w.config.appearances == ("phantom", "real")
    meta = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert meta["stage"] == "control"
    # fine-tuning into condition channels, balanced cells and a faster condition lr
    grown = cfg.model_copy(update={
        "model": DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real"),
                                condition_channels=True),
        "plane_balance": 1.0, "condition_lr_scale": 5.0,
        "prealign": StageConfig(steps=2, warmup_steps=1)})
    final3 = train(grown, merged, tmp_path / "run3", stages=("prealign", "control"),
                   progress=False)
    from safetensors import safe_open

    with safe_open(str(final3 / "model.safetensors"), "pt") as f:
        shares = json.loads(f.metadata()["fetalflex"])["batch_shares"]
    cells = {" ".join(c) for c in {(r.appearance, r.plane) for r in ds.records}}
    assert set(shares) == cells
    assert all(v == pytest.approx(1 / len(cells), abs=1e-3) for v in shares.values())
    assert FetalFlexDenoiser.load(final3).config.condition_channels
    # a model without appearances refuses real records instead of mislearning them
    plain = cfg.model_copy(update={"model": DenoiserConfig(**TINY_MODEL)})
    with pytest.raises(ValueError, match="model.appearances"):
        train(plain, merged, tmp_path / "run2", stages=("control",), progress=False)


def test_requests_choose_an_appearance_the_weights_serve(tiny_weights: Path) -> None:
    from fetalflex.backends.backends import load_backend
    from fetalflex.generation import Engine
    from fetalflex.request import GenerationRequest

    engine = Engine(load_backend("torch", tiny_weights))
    assert engine.appearance(None) == "phantom"
    with pytest.raises(InvalidRequestError, match=r"appearance: 'real' is not served by these "
                                                  r"weights \(they serve: phantom\)"):
        engine.run(GenerationRequest(plane="TT", appearance="REAL", steps=2))
    assert GenerationRequest(plane="TT", appearance=" Real ").appearance == "real"


def test_partial_layouts_span_nothing_to_everything_labelled() -> None:
    from fetalflex.training.train import partial_layouts

    g = torch.Generator().manual_seed(0)
    lay = torch.ones(4000, NUM_LABELS, 2, 2)
    kept = partial_layouts(lay, 1.0, (0.0, 1.0), g)[:, :, 0, 0].mean(1)
    assert float(kept.min()) == 0.0 and float(kept.max()) == 1.0  # empty and full layouts
    assert 0.4 < float(kept.mean()) < 0.6
    untouched = partial_layouts(lay[:10], 0.0, (0.0, 1.0), g)
    assert torch.equal(untouched, lay[:10])
