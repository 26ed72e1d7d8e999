"""A student's tone curve (``fetalflex.distill.calibrate``, ``distill --calibrate``): fitted
on training trajectories, stored in the config, the weights untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.distill.calibrate import (
    calibrate_student,
    fit_student_curves,
    student_images,
    teacher_images,
)
from fetalflex.evaluation.realism import grey_w1
from fetalflex.io.tone import apply_tone, identity_curve
from fetalflex.model.denoiser import FetalFlexDenoiser
from tests.distill.test_rollout import _model, _trajectories_of


def test_the_teachers_own_images_need_no_curve_and_another_models_move_onto_them() -> None:
    teacher = _model(0)
    traj = _trajectories_of(teacher, n=4)
    idx = np.arange(4)
    own = student_images(teacher, traj, idx)
    theirs = teacher_images(traj, idx)
    assert np.abs(own.astype(int) - theirs.astype(int)).max() <= 1  # float16 storage only
    curves, _ = fit_student_curves(teacher, traj, log=lambda _m: None)
    assert np.abs(np.subtract(curves["phantom"], identity_curve())).max() <= 1
    other = _model(5)
    curves, report = fit_student_curves(other, traj, log=lambda _m: None)
    before = student_images(other, traj, idx)
    after = apply_tone(before, curves["phantom"])
    assert grey_w1(after, theirs) < 0.25 * grey_w1(before, theirs)
    assert report["phantom"]["trajectories"] == 4
    assert report["phantom"]["black_fraction"]["teacher"] == round(float((theirs == 0).mean()), 4)


def test_calibrate_student_keeps_the_weights_and_records_the_curve(tmp_path: Path) -> None:
    teacher, student = _model(0), _model(5)
    traj = _trajectories_of(teacher, n=3)
    out = calibrate_student(student, {"distilled_from": "t" * 64}, traj, tmp_path / "cal",
                            log=lambda _m: None)
    back = FetalFlexDenoiser.load(out)
    for k, v in student.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)
    cfg = json.loads((out / "config.json").read_text())
    assert len(cfg["sampling"]["tone_curve"]["phantom"]) == 256
    meta = FetalFlexDenoiser.read_meta(out)
    assert meta["distilled_from"] == "t" * 64 and "phantom" in meta["tone_curve"]


def test_calibrate_refuses_a_non_student_and_a_second_mode(tiny_weights: Path, tiny_data: Path,
                                                           tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    from fetalflex.cli import main

    args = ["distill", "--teacher", str(tiny_weights), "--data", str(tiny_data), "--out",
            str(tmp_path / "run"), "--student-steps", "2", "--substeps", "2",
            "--trajectories", "4"]
    assert main([*args, "--calibrate", str(tiny_weights)]) != 0
    assert "--calibrate" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    assert main([*args, "--calibrate", str(tiny_weights), "--measure", str(tiny_weights)]) != 0
    assert "one mode at a time" in capsys.readouterr().err
