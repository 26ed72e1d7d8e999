"""The downstream-utility experiment end to end on a tiny model (structure, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.backends.backends import load_backend
from fetalflex.evaluation.downstream import (
    CONDITIONS,
    NORMAL_TRAIN,
    ORACLE,
    PLANE_TEST,
    SYNTH_NOISE,
    TEST_ABNORMAL,
    TEST_NORMAL,
    DownstreamOptions,
    _seed,
    run_downstream,
)
from fetalflex.io.png import read_text_chunks


def test_seed_ranges_never_overlap() -> None:
    opts = DownstreamOptions()
    seen: set[int] = set()
    for role in (NORMAL_TRAIN, ORACLE, TEST_NORMAL, TEST_ABNORMAL, PLANE_TEST, SYNTH_NOISE):
        for p in PLANE_CODES:
            s = {_seed(opts, role, p, i) for i in range(500)}
            assert not (s & seen)
            seen |= s


def test_downstream_runs_and_reports(tiny_weights: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    opts = DownstreamOptions(normals_per_plane=4, synth_per_preset=3, test_per_preset=4,
                             plane_sizes=(1,), plane_synth_per_plane=1, plane_test_per_plane=2,
                             train_seeds=(0,), classifier_steps=3, repaint_batch=2,
                             presets=("cleft_lip", "microcephaly"))
    res = run_downstream(load_backend("embedded", tiny_weights), opts, tmp_path,
                         progress=lambda _: None)
    saved = json.loads((tmp_path / "downstream.json").read_text())
    assert saved["anomaly"] == res["anomaly"]
    assert [r["preset"] for r in res["anomaly"]] == ["cleft_lip", "microcephaly"]
    for r in res["anomaly"]:
        assert r["n_test"] == 8
        assert r["n_train_abnormal"] + r["n_skipped_no_change"] == 3
        for c in CONDITIONS:
            per_seed = r[c]["auc_per_seed"]  # one classifier per training seed
            assert len(per_seed) == len(opts.train_seeds)
            assert r[c]["auc_mean"] == pytest.approx(np.mean(per_seed), abs=1e-4)
            lo, hi = r[c]["auc_ci95"]
            assert 0.0 <= lo <= hi <= 1.0
    micro = next(r for r in res["anomaly"] if r["preset"] == "microcephaly")
    assert micro["planes"] == ["TV", "TT", "TC"]
    assert res["synthesis"]["denoiser_calls"] > 0
    plane = res["plane_classifier"]
    assert plane[0]["real_per_plane"] == 1 and "real_plus_synthetic" in plane[0]
    assert "synthetic_only" in plane[-1]
    md = (tmp_path / "downstream.md").read_text()
    assert "cleft_lip" in md and "oracle" in md
    for name in ("downstream_auc.png", "downstream_plane.png"):
        assert "phantom" in read_text_chunks(tmp_path / name)["Description"]
    assert read_text_chunks(tmp_path / "downstream_examples.png")["Synthetic"] == "true"
    # a second run reuses the synthetic set and every finished part (same model, same
    # options): same twins, same rows, and no classifier is trained again
    import fetalflex.evaluation.downstream as ds

    def no_training(*_: object, **__: object) -> None:
        raise AssertionError("a finished part was trained again")

    with monkeypatch.context() as m:
        m.setattr(ds, "train_classifier", no_training)
        again = run_downstream(load_backend("embedded", tiny_weights), opts, tmp_path,
                               progress=lambda _: None)
    assert again["synthesis"] == res["synthesis"]
    assert again["anomaly"] == res["anomaly"]
    assert again["plane_classifier"] == res["plane_classifier"]
    # other options (here the classifier's steps) make the kept parts stale: all rerun
    lines = (tmp_path / "downstream_parts.jsonl").read_text().splitlines()
    assert len(lines) == len(opts.presets) + 1
    other = DownstreamOptions(**{**opts.__dict__, "classifier_steps": 4})
    trained: list[int] = []
    real = ds.train_classifier
    with monkeypatch.context() as m:
        m.setattr(ds, "train_classifier",
                  lambda *a, **k: trained.append(1) or real(*a, **k))
        run_downstream(load_backend("embedded", tiny_weights), other, tmp_path,
                       progress=lambda _: None)
    assert trained


def test_twins_differ_from_their_reference_only_in_the_region(tiny_weights: Path) -> None:
    from fetalflex.evaluation.downstream import _render
    from fetalflex.evaluation.twins import synthesize_twins
    from fetalflex.generation import Engine

    opts = DownstreamOptions(normals_per_plane=2)
    eng = Engine(load_backend("embedded", tiny_weights))
    normals = {p: _render(opts, NORMAL_TRAIN, p, 2, 32) for p in PLANE_CODES}
    syn = synthesize_twins(eng, normals, ("hydrocephalus",), per_preset=2, batch=2,
                           noise_seed=lambda p, i: _seed(opts, SYNTH_NOISE, p, i),
                           progress=lambda _: None)
    tw, ref, ctl = (syn.twins["hydrocephalus"], syn.references["hydrocephalus"],
                    syn.controls["hydrocephalus"])
    assert tw.shape == ref.shape == ctl.shape == (2, 32, 32)
    region = syn.regions["hydrocephalus"]
    assert region.any(axis=(1, 2)).all()
    assert np.array_equal(tw[~region], ref[~region])   # outside: the real phantom, exactly
    assert np.array_equal(ctl[~region], ref[~region])
    assert (tw[region] != ref[region]).mean() > 0.3     # inside: regenerated
    assert (ctl[region] != ref[region]).mean() > 0.3
