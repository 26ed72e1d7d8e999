"""``fetalflex distill``: teacher trajectories, the student's targets, training, and the
student served with its own sampling (K denoiser rows per image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.backends.backends import load_backend
from fetalflex.distill import trajectories as trajectories_mod
from fetalflex.distill.student import x0_errors, x0_targets
from fetalflex.distill.trajectories import (
    Trajectories,
    concat,
    holdout_trajectories,
    make_trajectories,
    student_timesteps,
)
from fetalflex.generation import Engine
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.diffusion import alphas_cumprod_for
from fetalflex.request import GenerationRequest
from tests.conftest import TINY_MODEL


def test_targets_land_a_ddim_step_on_the_teacher_state() -> None:
    """Stepping DDIM (eta 0) from x with the target's x0 reaches the teacher's next state."""
    ac = alphas_cumprod_for(DenoiserConfig(**TINY_MODEL))
    g = torch.Generator().manual_seed(0)
    states = torch.randn(3, 3, 8, 8, generator=g) * 0.5
    ts = [999, 499]
    x0 = x0_targets(states, ts, ac)
    a, a2 = ac[999], ac[499]
    eps = (states[:, 0] - a.sqrt() * x0[:, 0]) / (1 - a).sqrt()
    torch.testing.assert_close(a2.sqrt() * x0[:, 0] + (1 - a2).sqrt() * eps, states[:, 1])
    torch.testing.assert_close(x0[:, 1], states[:, 2])  # the last step: the image itself


def test_student_grid_must_lie_on_the_teacher_grid(tiny_weights: Path) -> None:
    engine = Engine(load_backend("torch", tiny_weights))
    assert student_timesteps(engine, 4, 5) == [999, 749, 499, 249]
    assert student_timesteps(engine, 3, 7) == [999, 666, 332]
    with pytest.raises(ValueError, match="substeps"):
        student_timesteps(engine, 4, 0)


def test_distill_end_to_end(tiny_weights: Path, tiny_data: Path, tmp_path: Path) -> None:
    from fetalflex.cli import main

    engine = Engine(load_backend("torch", tiny_weights))
    traj = make_trajectories(engine, tiny_data, 6, student_steps=2, substeps=2, seed=1,
                             log=lambda _m: None)
    assert traj.states.shape == (6, 3, 32, 32) and traj.timesteps == [999, 499]
    # the last state is what the teacher generates for that seed with the same sampling
    from fetalflex.anatomy.layout import Layout
    from fetalflex.generation import to_uint8

    lay = Layout(traj.planes[0], traj.label_maps[0], float(traj.field_mm[0]) or 100.0,
                 None if np.isnan(traj.ga[0]) else float(traj.ga[0]))
    img, calls = engine.sample_layouts([lay], [1 * 10**6 + 0], steps=4, sampler="ddim")
    assert calls == 4
    made = to_uint8(torch.from_numpy(traj.states[:1, -1:].astype(np.float32)))
    assert np.abs(made.astype(int) - img.astype(int)).max() <= 1
    traj.save(tmp_path / "t.npz")
    back = Trajectories.load(tmp_path / "t.npz")
    assert back.timesteps == traj.timesteps and np.array_equal(back.states, traj.states)
    assert set(back.guidance) == {"phantom"}
    rc = main(["distill", "--teacher", str(tiny_weights), "--data", str(tiny_data), "--out",
               str(tmp_path / "run"), "--student-steps", "2", "--substeps", "2",
               "--trajectories", "6", "--train-steps", "3", "--batch-size", "2"])
    assert rc == 0
    student = tmp_path / "run" / "final"
    cfg = json.loads((student / "config.json").read_text())
    curves = cfg["sampling"].pop("tone_curve")
    assert cfg["sampling"].pop("tone_curve_by_plane") == {}
    assert cfg["sampling"] == {"steps": 2, "guidance": 1.0, "sampler": "ddim",
                               "guidance_by_appearance": {}, "guidance_below_t": None,
                               "guidance_folded": True,
                               # a teacher's plane contrast is folded in like its guidance
                               "plane_contrast": {},
                               "plane_contrast_groups": [["TV", "TT", "TC"]]}
    # calibrated at the end of the run: one curve per appearance of its trajectories
    assert set(curves) == {"phantom"} and len(curves["phantom"]) == 256
    meta = FetalFlexDenoiser.read_meta(student)
    assert meta["tone_curve"]["phantom"]["trajectories"] == 6
    served = Engine(load_backend("embedded", student))
    res = served.run(GenerationRequest(plane="TV"))
    assert res.denoiser_calls == 2 and res.request is not None
    assert (res.request.steps, res.request.guidance) == (2, 1.0)
    # two-stage with the student: unguided, on its own 2-step grid (+ one stage-2 step)
    two = served.run(GenerationRequest(plane="TV", sampler="two-stage"))
    assert 2 <= two.denoiser_calls <= 3, two.denoiser_calls
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 3 and np.isfinite(log[-1]["loss"])
    assert [r for r in log if r.get("event") == "start"] == [
        {"step": 0, "event": "start", "trajectories": 6}]
    # a rerun resumes: nothing left to train, the same weights again
    assert main(["distill", "--teacher", str(tiny_weights), "--data", str(tiny_data),
                 "--out", str(tmp_path / "run"), "--student-steps", "2", "--substeps", "2",
                 "--trajectories", "6", "--train-steps", "3", "--batch-size", "2"]) == 0
    again = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sum(r.get("event") == "start" for r in again) == 1  # nothing trained: no start row


def test_more_trajectories_reuse_the_cached_shards(tiny_weights: Path, tiny_data: Path,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Raising the count later reuses every whole shard made before, byte for byte; a
    partial shard is made again at its new size."""
    monkeypatch.setattr(trajectories_mod, "SHARD", 4)
    engine = Engine(load_backend("torch", tiny_weights))
    said: list[str] = []

    def make(n: int) -> Trajectories:
        return make_trajectories(engine, tiny_data, n, student_steps=2, substeps=2, seed=3,
                                 log=said.append, cache=tmp_path)

    four = make(4)
    assert len(list(tmp_path.glob("trajectories-*.npz"))) == 1
    said.clear()
    six = make(6)
    assert any("0-3: cached" in m for m in said), said
    assert not any("4-5: cached" in m for m in said)
    assert six.states.shape[0] == 6 and len(six.planes) == 6
    assert np.array_equal(six.states[:4], four.states)
    assert np.array_equal(six.label_maps[:4], four.label_maps)
    assert len(list(tmp_path.glob("trajectories-*.npz"))) == 2
    # shard 1 draws its own records and noise: not a copy of shard 0
    assert not np.array_equal(six.states[4:6], four.states[:2])
    said.clear()
    assert np.array_equal(make(6).states, six.states)
    assert sum("cached" in m for m in said) == 2
    other = make_trajectories(engine, tiny_data, 2, student_steps=1, substeps=2, seed=3,
                              log=said.append)
    with pytest.raises(ValueError, match="different teachers or grids"):
        concat([four, other])


def _with_validation(manifest: Path, out: Path, n_val: int) -> Path:
    """The manifest with its first ``n_val`` records marked validation (absolute paths)."""
    lines = []
    for i, line in enumerate(manifest.read_text().splitlines()):
        rec = json.loads(line)
        rec["image"] = str(manifest.parent / rec["image"])
        rec["label_map"] = str(manifest.parent / rec["label_map"])
        rec["split"] = "val" if i < n_val else "train"
        lines.append(json.dumps(rec))
    path = out / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_holdout_trajectories_come_from_validation_layouts_only(
        tiny_weights: Path, tiny_data: Path, tmp_path: Path) -> None:
    from fetalflex.io.png import read_label_map

    data = _with_validation(tiny_data, tmp_path, 3)
    recs = [json.loads(x) for x in data.read_text().splitlines()]
    val_maps = [read_label_map(Path(r["label_map"])) for r in recs if r["split"] == "val"]
    engine = Engine(load_backend("torch", tiny_weights))
    held = holdout_trajectories(engine, data, 4, 2, 2, seed=1, log=lambda _m: None,
                                cache=tmp_path)
    assert held is not None and held.states.shape[0] == 4
    for m in held.label_maps:
        assert any(np.array_equal(m, v) for v in val_maps)
    train = make_trajectories(engine, data, 6, 2, 2, seed=1, log=lambda _m: None)
    for m in train.label_maps:
        assert not any(np.array_equal(m, v) for v in val_maps)
    assert list(tmp_path.glob("holdout-*.npz"))
    # no validation records: no held-out set, said, not an error
    said: list[str] = []
    assert holdout_trajectories(engine, tiny_data, 4, 2, 2, log=said.append) is None
    assert said and "no validation record" in said[0]
    # the error measure does not depend on batching
    from fetalflex.model.denoiser import FetalFlexDenoiser

    model = FetalFlexDenoiser.load(tiny_weights)
    idx = torch.arange(4)
    one, four = x0_errors(model, held, idx, batch=1), x0_errors(model, held, idx, batch=4)
    assert len(one) == 2 and all(v > 0 for v in one)
    np.testing.assert_allclose(one, four, rtol=1e-3)


def test_distill_logs_the_held_out_error_beside_the_training_one(
        tiny_weights: Path, tiny_data: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    from fetalflex.cli import main

    data = _with_validation(tiny_data, tmp_path, 3)
    run = tmp_path / "run"
    assert main(["distill", "--teacher", str(tiny_weights), "--data", str(data), "--out",
                 str(run), "--student-steps", "2", "--substeps", "2", "--trajectories", "6",
                 "--holdout", "3", "--train-steps", "2", "--batch-size", "2"]) == 0
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    held = [r for r in rows if "holdout_x0_error" in r]
    assert len(held) == 1 and held[0]["step"] == 2
    assert len(held[0]["holdout_x0_error"]) == 2 and len(held[0]["fit_x0_error"]) == 2
    with safe_open(str(run / "final" / "model.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["fetalflex"])
    assert meta["holdout_trajectories"] == 3
    assert meta["holdout_x0_error"] == held[0]["holdout_x0_error"]
    starts = [r for r in rows if r.get("event") == "start"]
    assert starts == [{"step": 0, "event": "start", "trajectories": 6}]
    from PIL import Image

    from fetalflex.distill.figure import read_curves

    with Image.open(run / "distill.png") as im:
        assert im.format == "PNG"
    curves = read_curves(run / "log.jsonl")
    assert curves.error_steps == [2] and curves.starts == [(0, 6)]
    assert curves.holdout == [held[0]["holdout_x0_error"]]


def test_distill_figure_reads_every_kind_of_row(tmp_path: Path) -> None:
    """Loss rows, a checkpoint measured twice (counted once), a resumption with more
    trajectories (a line), a plain resume (no line) after a kill that had logged past its
    checkpoint (those rows dropped), error rows of another step count (left out of the
    drawing), a non-object line and the torn last line of a killed run."""
    from fetalflex.distill.figure import draw_distill, plot_distill, read_curves

    err = {"fit_x0_error": [2e-3, 1e-3], "holdout_x0_error": [3e-3, 1e-3],
           "holdout_over_fit": 1.33}
    rows: list[object] = [
        {"step": 0, "event": "start", "trajectories": 640},
        {"step": 25, "loss": 0.004, "steps_per_s": 0.5},
        {"step": 50, "loss": 0.003, "steps_per_s": 0.5},
        {"step": 50, **err}, {"step": 50, **err},
        {"step": 50, "event": "start", "trajectories": 1280},
        {"step": 75, "loss": 0.002, "steps_per_s": 0.5},
        {"step": 100, "fit_x0_error": [1e-3, 5e-4], "holdout_x0_error": [2e-3, 6e-4],
         "holdout_over_fit": 1.73},
        {"step": 125, "loss": 0.009, "steps_per_s": 0.5},  # logged, then killed at 130
        12,
        {"step": 100, "event": "start", "trajectories": 1280},  # resumed from step 100
        {"step": 125, "loss": 0.0019, "steps_per_s": 0.5},
        {"step": 150, "fit_x0_error": [1e-3, 5e-4, 1e-4], "holdout_x0_error": [1, 2, 3],
         "holdout_over_fit": 1.0},
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"step": 10')
    c = read_curves(log)
    assert c.loss_steps == [25, 50, 75, 125] and c.loss == [0.004, 0.003, 0.002, 0.0019]
    assert c.error_steps == [50, 100, 150] and c.holdout[:2] == [[3e-3, 1e-3], [2e-3, 6e-4]]
    assert c.fit[1] == [1e-3, 5e-4] and c.starts == [(0, 640), (50, 1280)]
    fig = draw_distill(c, [999, 499])
    loss_ax, err_ax = fig.axes[:2]
    starts = 2  # one dotted line per change of the trajectory count, in each panel
    assert len(loss_ax.lines) == 1 + starts
    assert len(err_ax.lines) == 2 * 2 + starts
    held1 = err_ax.lines[0]
    assert list(held1.get_xdata()) == [50, 100] and list(held1.get_ydata()) == [3e-3, 2e-3]
    assert [ln.get_xdata()[0] for ln in err_ax.lines[4:]] == [0, 50]
    assert plot_distill(log, tmp_path / "d.png", [999, 499]).is_file()
    assert read_curves(tmp_path / "none.jsonl").loss == []


def test_distill_measure_reports_a_students_error_without_training(
        tiny_weights: Path, tiny_data: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--measure W``: the same numbers the run logged for its final EMA weights; no
    training step taken; a teacher (not a student of this run) is refused by name."""
    from fetalflex.cli import main

    data = _with_validation(tiny_data, tmp_path, 3)
    run = tmp_path / "run"
    args = ["distill", "--teacher", str(tiny_weights), "--data", str(data), "--out", str(run),
            "--student-steps", "2", "--substeps", "2", "--trajectories", "6", "--holdout", "3",
            "--batch-size", "2"]
    assert main([*args, "--train-steps", "2"]) == 0
    logged = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    held = [r for r in logged if "holdout_x0_error" in r][-1]
    before = (run / "log.jsonl").read_text()
    capsys.readouterr()
    assert main([*args, "--train-steps", "50", "--measure", str(run / "final")]) == 0
    out = capsys.readouterr().out
    rows = json.loads(out[out.index("["):])
    assert len(rows) == 1 and rows[0]["train_steps"] == 2
    assert rows[0]["holdout_x0_error"] == held["holdout_x0_error"]
    assert rows[0]["fit_x0_error"] == held["fit_x0_error"]
    assert rows[0]["measured_on_trajectories"] == 6 and rows[0]["holdout_trajectories"] == 3
    assert (run / "log.jsonl").read_text() == before  # nothing trained
    assert main([*args, "--measure", str(tiny_weights)]) != 0
    err = capsys.readouterr().err
    assert "--measure" in err and "not a student of this run" in err
    # refused before any trajectory is made (a fresh run folder stays empty)
    fresh = tmp_path / "fresh"
    assert main([*args[:6], str(fresh), *args[7:], "--measure", str(tiny_weights)]) != 0
    assert not fresh.exists() or not any(fresh.iterdir())
    assert main([*args, "--holdout", "0", "--measure", str(run / "final")]) != 0
    assert "--holdout" in capsys.readouterr().err
