"""The downstream-utility experiment end to end on a tiny model (structure, not quality)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.backends.backends import load_backend
from fetalflex.evaluation.downstream import (
    NORMAL_TRAIN,
    ORACLE,
    PLANE_TEST,
    SYNTH_NOISE,
    TEST_ABNORMAL,
    TEST_NORMAL,
    _seed,
    run_downstream,
)
from fetalflex.evaluation.options import CONDITIONS, DownstreamOptions
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
    assert len(lines) == len(opts.presets) * len(CONDITIONS) + len(opts.plane_sizes) + 1
    other = DownstreamOptions(**{**opts.__dict__, "classifier_steps": 4})
    trained: list[int] = []
    real = ds.train_classifier
    with monkeypatch.context() as m:
        m.setattr(ds, "train_classifier",
                  lambda *a, **k: trained.append(1) or real(*a, **k))
        run_downstream(load_backend("embedded", tiny_weights), other, tmp_path,
                       progress=lambda _: None)
    assert trained


def test_synthetic_set_serves_subsets_and_grows(tiny_weights: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A preset's twins do not depend on which others are asked for: a subset run reuses
    the kept set without synthesizing, and a run asking for more synthesizes only those."""
    import fetalflex.evaluation.twins as tw
    from fetalflex.evaluation.downstream import _render
    from fetalflex.generation import Engine

    opts = DownstreamOptions(normals_per_plane=2)
    eng = Engine(load_backend("embedded", tiny_weights))
    normals = {p: _render(opts, NORMAL_TRAIN, p, 2, 32) for p in PLANE_CODES}

    def cached(presets: tuple[str, ...]) -> tw.SyntheticSet:
        return tw.cached_twins(eng, normals, presets, 2, 2,
                               lambda p, i: _seed(opts, SYNTH_NOISE, p, i),
                               tmp_path / "set.npz", {"seed": 0}, progress=lambda _: None)

    both = cached(("hydrocephalus", "short_femur"))
    made: list[tuple[str, ...]] = []
    real = tw.synthesize_twins
    monkeypatch.setattr(tw, "synthesize_twins",
                        lambda e, n, presets, *a, **k: made.append(presets)
                        or real(e, n, presets, *a, **k))
    one = cached(("short_femur",))
    assert made == []
    assert np.array_equal(one.twins["short_femur"], both.twins["short_femur"])
    assert one.calls == both.cost["short_femur"][0] > 0
    alone = real(eng, normals, ("short_femur",), 2, 2,
                 lambda p, i: _seed(opts, SYNTH_NOISE, p, i), progress=lambda _: None)
    assert np.array_equal(alone.twins["short_femur"], both.twins["short_femur"])
    more = cached(("cleft_lip", "hydrocephalus"))
    assert made == [("cleft_lip",)]
    assert np.array_equal(more.twins["hydrocephalus"], both.twins["hydrocephalus"])
    assert set(cached(("cleft_lip", "hydrocephalus", "short_femur")).twins) == {
        "cleft_lip", "hydrocephalus", "short_femur"}
    assert made == [("cleft_lip",)]


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


def test_downstream_subset_of_regimes_and_synthesis_settings(tiny_weights: Path,
                                                             tmp_path: Path) -> None:
    """A run comparing synthesis settings: only the twin regimes, no plane experiment; the
    settings reach the synthesis (other twins) and the results."""
    base = DownstreamOptions(normals_per_plane=4, synth_per_preset=2, test_per_preset=4,
                             train_seeds=(0,), classifier_steps=2, repaint_batch=2,
                             presets=("hydrocephalus",), conditions=("synthetic",),
                             plane_experiment=False)
    be = load_backend("embedded", tiny_weights)
    a = run_downstream(be, base, tmp_path / "a", progress=lambda _: None)
    strong = DownstreamOptions(**{**base.__dict__, "control_scale": 1.5})
    b = run_downstream(be, strong, tmp_path / "b", progress=lambda _: None)
    assert set(a["anomaly"][0]) >= {"synthetic"}
    assert not set(a["anomaly"][0]) & {"oracle", "normal_only", "synthetic_no_control"}
    assert a["plane_classifier"] == [] and not (tmp_path / "a" / "downstream_plane.png").exists()
    md = (tmp_path / "a" / "downstream.md").read_text()
    assert "twins" in md and "oracle" not in md
    assert (a["synthesis"]["control_scale"], b["synthesis"]["control_scale"]) == (1.0, 1.5)
    with np.load(tmp_path / "a" / "synthetic_set.npz") as za, \
            np.load(tmp_path / "b" / "synthetic_set.npz") as zb:
        assert not np.array_equal(za["twins/hydrocephalus"], zb["twins/hydrocephalus"])
    # asking for one more regime trains that regime only, and keeps the finished one
    import fetalflex.evaluation.downstream as ds

    trained: list[int] = []
    real = ds.train_classifier
    with pytest.MonkeyPatch.context() as m:
        m.setattr(ds, "train_classifier", lambda *a, **k: trained.append(1) or real(*a, **k))
        more = run_downstream(be, DownstreamOptions(**{**base.__dict__,
                                                      "conditions": ("synthetic", "oracle")}),
                              tmp_path / "a", progress=lambda _: None)
    assert len(trained) == len(base.train_seeds)
    assert more["anomaly"][0]["synthetic"] == a["anomaly"][0]["synthetic"]
    assert "oracle" in more["anomaly"][0]


@pytest.mark.parametrize(("field", "value"), [("conditions", ("oracles",)),
                                              ("conditions", ()),
                                              ("control_scale", 9.0), ("guidance", -1.0),
                                              ("reader", "huge")])
def test_downstream_options_name_the_bad_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        DownstreamOptions(**{field: value})  # type: ignore[arg-type]
