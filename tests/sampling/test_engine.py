from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fetalflex.anatomy.structures import label_id
from fetalflex.backends.backends import load_backend
from fetalflex.cli import main
from fetalflex.errors import InvalidRequestError, SamplingCancelledError
from fetalflex.generation import Engine, GenerationRequest
from fetalflex.io.png import read_gray, read_text_chunks
from fetalflex.sampling.schedules import count_calls, repaint_transitions, trailing_timesteps
from fetalflex.sampling.two_stage import TwoStageOptions


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_schedules_are_plain_lists() -> None:
    assert trailing_timesteps(1000, 4) == [999, 749, 499, 249]
    assert trailing_timesteps(1000, 4, start=399) == [399, 299, 199, 99]
    tr = repaint_transitions([5, 4, 3, 2, 1, 0], jump_length=2, jump_n_sample=2)
    # jump back 2 steps after steps 2 and 4, once each (jump_n_sample - 1 = 1)
    assert tr == [(5, 4), (4, 3), (3, 4), (4, 5), (5, 4), (4, 3), (3, 2), (2, 1), (1, 2),
                  (2, 3), (3, 2), (2, 1), (1, 0), (0, -1)]
    assert count_calls(tr) == 10
    # The default pair: DDIM-25 normal + repaint(20 steps, jump 5, 2 samples) <= 100 calls.
    assert 25 + count_calls(repaint_transitions(trailing_timesteps(1000, 20), 5, 2)) <= 100


def test_pair_keeps_every_pixel_outside_the_region(tiny_weights: Path) -> None:
    eng = Engine(load_backend("torch", tiny_weights))
    res = eng.run(GenerationRequest(plane="TV", preset="hydrocephalus", pair=True, steps=4,
                                    repaint={"steps": 6, "jump_length": 2}))
    s = res.samples[0]
    assert s.region is not None and s.abnormal_image is not None
    assert s.region.sum() > 0
    assert np.array_equal(s.abnormal_image[~s.region], s.image[~s.region])
    assert (s.abnormal_image[s.region] != s.image[s.region]).mean() > 0.5
    lv = label_id("lateral_ventricle")
    assert (s.abnormal_layout.label_map == lv).sum() > (s.layout.label_map == lv).sum()
    assert res.denoiser_calls == 4 + count_calls(
        repaint_transitions(trailing_timesteps(1000, 6), 2, 2))


def test_batch_repaint_reproduces_the_pair_twin(tiny_weights: Path) -> None:
    """Engine.repaint (many references of one plane per batch) is the loop behind pairs."""
    from fetalflex.generation import RepaintSettings

    eng = Engine(load_backend("torch", tiny_weights))
    rp = RepaintSettings(steps=6, jump_length=2)
    reqs = [GenerationRequest(plane="TV", preset="hydrocephalus", pair=True, steps=4, seed=s,
                              repaint=rp) for s in (3, 4)]
    pairs = [eng.run(r).samples[0] for r in reqs]
    twins, calls = eng.repaint(np.stack([p.image for p in pairs]),
                               [p.abnormal_layout for p in pairs],  # type: ignore[misc]
                               [p.region for p in pairs],  # type: ignore[misc]
                               [3, 4], settings=rp)
    assert calls == count_calls(repaint_transitions(trailing_timesteps(1000, 6), 2, 2))
    for twin, p in zip(twins, pairs, strict=True):
        assert p.abnormal_image is not None and p.region is not None
        diff = np.abs(twin.astype(int) - p.abnormal_image.astype(int))
        assert diff.max() <= 1  # same seeds: the same twin, batched or alone
        assert np.array_equal(twin[~p.region], p.image[~p.region])
    with pytest.raises(InvalidRequestError, match="layouts: one batch must hold one plane"):
        eng.repaint(np.stack([pairs[0].image] * 2), [pairs[0].layout,
                    eng.anatomy_for(GenerationRequest(plane="AC"), None)[0].normal],
                    [pairs[0].region] * 2, [1, 2])  # type: ignore[list-item]


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "two-stage"])
def test_batched_equals_alone(tiny_weights: Path, sampler: str) -> None:
    eng = Engine(load_backend("torch", tiny_weights))
    batch = eng.run(GenerationRequest(plane="AC", n=3, seed=10, steps=4, sampler=sampler))
    alone = eng.run(GenerationRequest(plane="AC", n=1, seed=12, steps=4, sampler=sampler))
    diff = np.abs(batch.samples[2].image.astype(int) - alone.samples[0].image.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    assert not np.array_equal(batch.samples[0].image, batch.samples[1].image)


def test_embedded_onnx_matches_torch(tiny_weights: Path) -> None:
    req = GenerationRequest(plane="FL", seed=5, steps=5)
    a = Engine(load_backend("torch", tiny_weights)).run(req).samples[0].image
    b = Engine(load_backend("embedded", tiny_weights)).run(req).samples[0].image
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.05


def test_two_stage_reports_its_choices(tiny_weights: Path) -> None:
    eng = Engine(load_backend("torch", tiny_weights))
    res = eng.run(GenerationRequest(plane="TT", n=2, sampler="two-stage"))
    opts = TwoStageOptions()  # the bounds the sampler promises, read from its options
    for s in res.samples:
        r = s.report
        assert opts.stage1_min_steps <= r["stage1_steps"] <= opts.stage1_max_steps
        assert opts.strength_min <= r["stage2_strength"] <= opts.strength_max
        assert 2 <= r["stage2_steps"] <= opts.stage2_steps_at_max
    assert res.denoiser_calls <= opts.stage1_max_steps + 2 * opts.stage2_steps_at_max


def test_cancellation_between_steps(tiny_weights: Path) -> None:
    eng = Engine(load_backend("torch", tiny_weights))
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(SamplingCancelledError):
        for _ in eng.run_progressive(GenerationRequest(plane="TV", steps=10), should_stop=stop):
            pass


def test_request_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="preset: 'cleft_lip' applies to plane"):
        GenerationRequest(plane="TV", preset="cleft_lip")
    with pytest.raises(ValueError, match="pair: a counterfactual pair needs a preset"):
        GenerationRequest(plane="TV", pair=True)
    with pytest.raises(ValueError, match="guidance"):
        GenerationRequest(plane="TV", guidance=-1)


def test_generate_cli_writes_marked_images_and_sidecar(tiny_weights: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "g"
    assert main(["generate", "--plane", "LIP", "--preset", "cleft_lip", "--pair", "--steps",
                 "3", "--weights", str(tiny_weights), "--out", str(out), "--quiet"]) == 0
    side = json.loads((out / "lip.json").read_text())
    assert side["synthetic"] is True and side["denoiser_calls"] > 3
    assert side["model"]["sha256"] and side["request"]["preset"] == "cleft_lip"
    img = out / side["samples"][0]["abnormal_image"]
    assert read_text_chunks(img)["Synthetic"] == "true"
    assert read_gray(img).shape == (32, 32)
