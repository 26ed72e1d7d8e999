"""The free-running student (``fetalflex.distill.rollout``): steps exactly as the service
samples, its error against the teacher's states, and rollout training (``--rollout``,
``--init``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.anatomy.layout import one_hot
from fetalflex.distill.rollout import (
    TeacherSegment,
    ddim_move,
    own_rows,
    own_states,
    rollout_errors,
    student_x0,
    x0_target,
)
from fetalflex.distill.student import trajectory_conds, x0_errors
from fetalflex.distill.trajectories import Trajectories
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.diffusion import alphas_cumprod_for
from fetalflex.sampling.ddim import ddim_scheduler
from tests.conftest import TINY_MODEL

TS = [999, 499]


def _model(seed: int = 0) -> FetalFlexDenoiser:
    torch.manual_seed(seed)
    m = FetalFlexDenoiser(DenoiserConfig.model_validate(TINY_MODEL))
    with torch.no_grad():  # a zero-initialised output would make every model alike
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return m.eval()


def _trajectories_of(model: FetalFlexDenoiser, n: int = 3, ts: list[int] = TS
                     ) -> Trajectories:
    """Trajectories whose 'teacher' is ``model`` itself, sampled as the service samples
    (``own_states``, checked against the diffusers DDIM step by the first test)."""
    size = model.config.image_size
    g = torch.Generator().manual_seed(1)
    maps = torch.randint(0, 5, (n, size, size), generator=g).numpy().astype(np.uint8)
    traj = Trajectories(np.zeros((n, len(ts) + 1, size, size), np.float16), ts, maps,
                        ["TV"] * n, np.full(n, np.nan, np.float32),
                        np.full(n, 100.0, np.float32), ["phantom"] * n, {"phantom": 2.0},
                        "t" * 64)
    ac = alphas_cumprod_for(model.config)
    x = torch.randn(n, 1, size, size, generator=g)
    lay = torch.from_numpy(np.stack([one_hot(m) for m in maps]))
    cond = trajectory_conds(traj, torch.arange(n), model.config)
    states = [x[:, 0]]
    for j in range(len(ts)):
        states.append(own_states(model, x, torch.full((n,), j + 1), ts, lay, cond, ac)[:, 0])
    traj.states = torch.stack(states, 1).numpy().astype(np.float16)
    return traj


def test_student_steps_match_the_services_ddim_sampler() -> None:
    """``ddim_move`` after ``student_x0`` is the diffusers DDIM step the service runs
    (clipped x0, noise recomputed from it), down to the final image."""
    model = _model()
    cfg = model.config
    ac = alphas_cumprod_for(cfg)
    sch = ddim_scheduler(cfg)
    sch.set_timesteps(len(TS))
    assert [int(t) for t in sch.timesteps] == TS
    g = torch.Generator().manual_seed(3)
    size = cfg.image_size
    x = torch.randn(2, 1, size, size, generator=g) * 3  # large: x0 gets clipped
    lay = torch.from_numpy(np.stack([one_hot(np.zeros((size, size), np.uint8))] * 2))
    traj = Trajectories(np.zeros((2, 3, size, size), np.float16), TS,
                        np.zeros((2, size, size), np.uint8), ["TV", "TV"],
                        np.full(2, np.nan, np.float32), np.full(2, 100.0, np.float32),
                        ["phantom"] * 2, {}, "t")
    cond = trajectory_conds(traj, torch.arange(2), cfg)
    ours, theirs = x.clone(), x.clone()
    with torch.no_grad():
        for j, t in enumerate(TS):
            x0 = student_x0(model, ours, t, lay, cond, ac)
            ours = ddim_move(ours, x0, t, TS[j + 1] if j + 1 < len(TS) else None, ac)
            v = model(theirs, torch.full((2,), t), lay, cond, torch.ones(2))
            theirs = sch.step(v, t, theirs, eta=0.0, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert float(ours.abs().max()) <= 1.0 + 1e-5  # the image is x0, clipped


def test_x0_target_lands_on_the_next_state_from_any_state() -> None:
    ac = alphas_cumprod_for(DenoiserConfig.model_validate(TINY_MODEL))
    g = torch.Generator().manual_seed(0)
    x, nxt = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t, t2 = torch.tensor([999, 749, 499, 749]), torch.tensor([749, 499, 249, 249])
    x0 = x0_target(x, nxt, t, t2, ac)
    for r in range(4):
        moved = ddim_move(x[r], x0[r], int(t[r]), int(t2[r]), ac)
        torch.testing.assert_close(moved, nxt[r], atol=1e-4, rtol=1e-4)
    assert x0_target(x, nxt, t, None, ac) is nxt


def test_rollout_error_is_zero_for_the_model_that_made_the_trajectories() -> None:
    """Its own trajectories: free-running and teacher-forced errors vanish; another
    model's are positive."""
    model = _model(0)
    traj = _trajectories_of(model)
    idx = torch.arange(3)
    ac = alphas_cumprod_for(model.config)
    conds = trajectory_conds(traj, idx, model.config)
    own = rollout_errors(model, traj, idx, conds, ac)
    assert len(own) == 2 and max(own) < 1e-5  # float16 storage only
    other = rollout_errors(_model(5), traj, idx, conds, ac)
    assert min(other) > 1e-4
    # own_states at 0 steps is the noise; at K steps the final image
    lay = torch.from_numpy(np.stack([one_hot(m) for m in traj.label_maps]))
    start = torch.from_numpy(traj.states[:, 0].astype(np.float32))[:, None]
    got = own_states(model, start, torch.tensor([0, 2, 1]), TS, lay, conds, ac)
    torch.testing.assert_close(got[0], start[0])
    last = torch.from_numpy(traj.states[1, 2].astype(np.float32))
    torch.testing.assert_close(got[1, 0], last, atol=2e-3, rtol=0)
    # teacher-forced on its own path: the first step's x0 is its own (the error of the last
    # one counts x0 beyond the image range, which sampling clips)
    assert x0_errors(model, traj, idx)[0] < 1e-3


def test_teacher_in_the_loop_retraces_its_cached_trajectories_and_rows_follow_it(
        tiny_weights: Path, tiny_data: Path) -> None:
    """``TeacherSegment`` from the teacher's own state at each student step reaches its
    cached next state (the same guided calls as ``Engine.sample_states``); ``own_rows``:
    the target moves the student's own (drifted) state to where the teacher goes from it,
    the teacher's image at the last step; the cached trajectories are left as they were."""
    from fetalflex.backends.backends import load_backend
    from fetalflex.distill.trajectories import make_trajectories
    from fetalflex.generation import Engine

    engine = Engine(load_backend("torch", tiny_weights))
    traj = make_trajectories(engine, tiny_data, 4, student_steps=3, substeps=2, seed=2,
                             log=lambda _m: None)
    ts = traj.timesteps
    teacher = TeacherSegment(engine.backend.call, engine.cfg, traj.guidance, 2)
    states = torch.from_numpy(traj.states)
    before = states.clone()
    n = len(traj.planes)
    lay = torch.from_numpy(np.stack([one_hot(m) for m in traj.label_maps]))
    cond = trajectory_conds(traj, torch.arange(n), engine.cfg)
    for j in range(len(ts)):
        got = teacher.next_states(states[:, j][:, None].float(), torch.full((n,), j), ts, lay,
                                  cond, traj.appearances)
        torch.testing.assert_close(got[:, 0], states[:, j + 1].float(), atol=3e-3, rtol=0)
    student = FetalFlexDenoiser.load(tiny_weights)  # unguided: not the guided teacher's path
    ac = alphas_cumprod_for(engine.cfg)
    steps = torch.tensor([1, 2, 1, 2])
    x, tgt = own_rows(student, teacher, states, steps, ts, lay, cond, traj.appearances, ac)
    assert float((x[0, 0] - states[0, 1].float()).abs().max()) > 1e-3  # it has drifted
    where = teacher.next_states(x, steps, ts, lay, cond, traj.appearances)
    for r, j in enumerate(steps.tolist()):
        nxt = ts[j + 1] if j + 1 < len(ts) else None
        torch.testing.assert_close(ddim_move(x[r], tgt[r], ts[j], nxt, ac), where[r],
                                   atol=1e-3, rtol=1e-3)
    assert torch.equal(tgt[1], where[1])  # the last step: the teacher's image from there
    assert torch.equal(states, before)


def test_distill_rollout_and_init(tiny_weights: Path, tiny_data: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--init`` starts from a student of the same run (a teacher is refused by name before
    anything is made); ``--rollout`` trains on own states, logs the free-running error and
    says so in the weights' metadata; a fraction outside [0, 1] is refused by name."""
    from safetensors import safe_open

    from fetalflex.cli import main
    from tests.distill.test_distill import _with_validation

    data = _with_validation(tiny_data, tmp_path, 3)
    base = ["distill", "--teacher", str(tiny_weights), "--data", str(data),
            "--student-steps", "2", "--substeps", "2", "--trajectories", "6", "--holdout", "3",
            "--batch-size", "4"]
    first = tmp_path / "first"
    assert main([*base, "--out", str(first), "--train-steps", "2"]) == 0
    fresh = tmp_path / "fresh"
    assert main([*base, "--out", str(fresh), "--init", str(tiny_weights)]) != 0
    err = capsys.readouterr().err
    assert "--init" in err and "not a student of this run" in err
    assert not fresh.exists() or not any(fresh.iterdir())
    assert main([*base, "--out", str(fresh), "--rollout", "1.5"]) != 0
    assert "--rollout" in capsys.readouterr().err
    one = [*base[:6], "1", *base[7:]]
    assert one[5:7] == ["--student-steps", "1"]
    assert main([*one, "--out", str(fresh), "--rollout", "0.5"]) != 0
    assert "--rollout" in capsys.readouterr().err
    # the same student grid made from another number of teacher steps: refused by name
    other = [*base[:8], "4", *base[9:]]
    assert other[7:9] == ["--substeps", "4"]
    for flag in ("--measure", "--init"):
        assert main([*other, "--out", str(fresh), flag, str(first / "final")]) != 0
        err = capsys.readouterr().err
        assert flag in err and "2 teacher steps per student step, this run's 4" in err
    assert not fresh.exists() or not any(fresh.iterdir())
    second = tmp_path / "second"
    assert main([*base, "--out", str(second), "--train-steps", "2", "--rollout", "1",
                 "--init", str(first / "final")]) == 0
    with safe_open(str(second / "final" / "model.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["fetalflex"])
    assert meta["rollout"] == 1.0 and meta["initialised_from"] == str(first / "final")
    assert meta["substeps"] == 2
    rows = [json.loads(x) for x in (second / "log.jsonl").read_text().splitlines()]
    held = [r for r in rows if "holdout_rollout_error" in r]
    assert held and len(held[-1]["holdout_rollout_error"]) == 2
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r)
    # started from the first student, not from the teacher: different from a fresh start
    a = FetalFlexDenoiser.load(first / "final").state_dict()
    teacher = FetalFlexDenoiser.load(tiny_weights).state_dict()
    b = FetalFlexDenoiser.load(second / "final").state_dict()
    key = next(k for k in a if not torch.equal(a[k], teacher[k]))
    assert (b[key] - a[key]).abs().max() < (b[key] - teacher[key]).abs().max()


def test_distill_figure_draws_the_free_running_error_where_logged(tmp_path: Path) -> None:
    """Rows with ``holdout_rollout_error`` add a third panel, one curve per student step;
    rows without it (older runs) are left out of that panel only."""
    from fetalflex.distill.figure import draw_distill, read_curves

    err = {"fit_x0_error": [2e-3, 1e-3], "holdout_x0_error": [3e-3, 1e-3]}
    rows = [{"step": 0, "event": "start", "trajectories": 6},
            {"step": 50, **err},
            {"step": 100, **err, "holdout_rollout_error": [4e-3, 2e-3]},
            {"step": 150, **err, "holdout_rollout_error": [3e-3, 1.5e-3]}]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    c = read_curves(log)
    assert c.holdout_rollout == [[], [4e-3, 2e-3], [3e-3, 1.5e-3]]
    fig = draw_distill(c, TS)
    assert len(fig.axes) == 3
    free = fig.axes[2]
    assert len(free.lines) == 2 + 1  # a curve per student step, the start line
    assert list(free.lines[1].get_xdata()) == [100, 150]
    assert list(free.lines[1].get_ydata()) == [2e-3, 1.5e-3]
    assert len(draw_distill(read_curves(tmp_path / "none.jsonl"), TS).axes) == 2
