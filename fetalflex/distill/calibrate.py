"""A student's tone curve: its grey levels calibrated to its teacher's, on training layouts.

A few-step student regressed on its teacher's trajectories lands *near* the black its
teacher writes (fluid, outside the sector) and leaves a faint 1-5 grey-level haze there;
radiomics texture distances (FRD) read the haze as a different texture although every
structure is where it should be (session 25, docs/EVALUATION.md). ``calibrate_student``
samples the student from the starting noise of training trajectories exactly as the
service samples it, pools its images and the teacher's images of the same trajectories per
appearance, fits the monotone quantile map between them (``fit_tone_curve``) and writes
the student again with the curves in its config (``sampling.tone_curve``), which ``Engine``
applies to every image it samples. Held-out trajectories and validation scans are never
used: they are what measures the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fetalflex.anatomy.layout import one_hot
from fetalflex.distill.rollout import student_step
from fetalflex.distill.student import trajectory_conds
from fetalflex.distill.trajectories import Trajectories
from fetalflex.io import pixels
from fetalflex.io.tone import apply_tone, black_fraction, fit_tone_curve
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.diffusion import alphas_cumprod_for

Log = Callable[[str], None]
CALIBRATION_TRAJECTORIES = 256  # per appearance: about 4 M pixels at 128 px


@torch.no_grad()
def student_images(model: FetalFlexDenoiser, traj: Trajectories, idx: NDArray[np.int64],
                   batch: int = 16) -> NDArray[np.uint8]:
    """(N, H, W) uint8: the student's own images from trajectories ``idx``'s starting
    noise, sampled as the service samples it (no tone curve: that is what is fitted)."""
    model.eval()
    ac = alphas_cumprod_for(model.config)
    out = []
    for s in range(0, len(idx), batch):
        i = torch.from_numpy(idx[s:s + batch])
        x = torch.from_numpy(traj.states[i.numpy(), 0]).float()[:, None]
        lay = torch.from_numpy(np.stack([one_hot(traj.label_maps[int(q)]) for q in i]))
        cond = trajectory_conds(traj, i, model.config)
        for j in range(len(traj.timesteps)):
            x = student_step(model, x, j, traj.timesteps, lay, cond, ac)
        out.append(pixels.to_uint8(x[:, 0].numpy()))
    return np.concatenate(out)


def teacher_images(traj: Trajectories, idx: NDArray[np.int64]) -> NDArray[np.uint8]:
    """(N, H, W) uint8: the teacher's images at the end of trajectories ``idx``."""
    return pixels.to_uint8(traj.states[idx, -1].astype(np.float32))


def fit_student_curves(model: FetalFlexDenoiser, traj: Trajectories,
                       per_appearance: int = CALIBRATION_TRAJECTORIES, seed: int = 0,
                       log: Log = print) -> tuple[dict[str, tuple[int, ...]],
                                                  dict[str, dict[str, Any]]]:
    """Per appearance in ``traj``: the student's tone curve, fitted on up to
    ``per_appearance`` of its (training) trajectories, and what it changes (black
    fraction and mean grey of the student's images before and after, the teacher's)."""
    rng = np.random.default_rng(seed)
    looks = np.array(traj.appearances)
    curves: dict[str, tuple[int, ...]] = {}
    report: dict[str, dict[str, Any]] = {}
    for look in sorted(set(traj.appearances)):
        pool = np.flatnonzero(looks == look)
        idx = np.sort(rng.choice(pool, min(len(pool), per_appearance), replace=False))
        own, theirs = student_images(model, traj, idx), teacher_images(traj, idx)
        curve = fit_tone_curve(own, theirs)
        after = apply_tone(own, curve)
        curves[look] = curve
        report[look] = {"trajectories": len(idx),
                        "black_fraction": {"student": black_fraction(own),
                                           "calibrated": black_fraction(after),
                                           "teacher": black_fraction(theirs)},
                        "mean_grey": {"student": round(float(own.mean()), 2),
                                      "calibrated": round(float(after.mean()), 2),
                                      "teacher": round(float(theirs.mean()), 2)},
                        "largest_shift": int(np.max(np.abs(np.subtract(curve, range(256)))))}
        log(f"tone curve {look} ({len(idx)} training trajectories): black pixels "
            f"{report[look]['black_fraction']['student']:.3f} -> "
            f"{report[look]['black_fraction']['calibrated']:.3f} (teacher "
            f"{report[look]['black_fraction']['teacher']:.3f}); largest level shift "
            f"{report[look]['largest_shift']}")
    return curves, report


def calibrate_student(model: FetalFlexDenoiser, meta: dict[str, Any], traj: Trajectories,
                      out: Path, per_appearance: int = CALIBRATION_TRAJECTORIES,
                      seed: int = 0, log: Log = print) -> Path:
    """Write ``model`` (a checked student of ``traj``'s teacher) to ``out`` with its tone
    curves (``fit_student_curves``) in its config and what they change in its metadata;
    returns ``out``. The weights themselves are unchanged."""
    curves, report = fit_student_curves(model, traj, per_appearance, seed, log)
    cfg = model.config
    calibrated = FetalFlexDenoiser(cfg.model_copy(update={"sampling": cfg.sampling.model_copy(
        update={"tone_curve": curves})}))
    calibrated.load_state_dict(model.state_dict())
    calibrated.save(out, meta={**meta, "tone_curve": report})
    log(f"calibrated student: {out}")
    return out
