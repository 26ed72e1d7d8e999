"""The figure of a distillation run (``OUT/distill.png``), read from its ``log.jsonl``:
the training loss, the EMA student's x0 error per student step on held-out layouts
beside the same error on training ones (teacher-forced), and, where logged, the distance of
its own free-running state to the teacher's after each step on held-out layouts. Where the
run was resumed with more teacher trajectories, a vertical line says from which step on how
many were trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DistillCurves:
    """The series of one run's log, by kind of row."""

    loss_steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    error_steps: list[int] = field(default_factory=list)
    holdout: list[list[float]] = field(default_factory=list)  # [checkpoint][student step]
    fit: list[list[float]] = field(default_factory=list)
    # free-running (rollout) error per checkpoint, [] where the row has none
    holdout_rollout: list[list[float]] = field(default_factory=list)
    starts: list[tuple[int, int]] = field(default_factory=list)  # (step, trajectories)


def read_curves(log_path: Path) -> DistillCurves:
    """Parse ``log.jsonl`` (empty curves when there is none): loss rows, x0-error rows (one
    per checkpoint step; a step measured twice counts once) and start rows. A start at step
    s drops the rows logged past s before it (a run killed between checkpoints resumes from
    the last one and logs those steps again); a start that does not change the number of
    trajectories is a plain resume and draws no line. Rows of another kind or shape, and a
    torn last line, are skipped."""
    c = DistillCurves()
    if not log_path.is_file():
        return c
    for line in log_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict):
            continue
        step = int(row.get("step", -1))
        if row.get("event") == "start":
            _cut(c, step)
            n = int(row["trajectories"])
            if not c.starts or c.starts[-1][1] != n:
                c.starts.append((step, n))
        elif "loss" in row:
            c.loss_steps.append(step)
            c.loss.append(float(row["loss"]))
        elif "holdout_x0_error" in row and step not in c.error_steps:
            c.error_steps.append(step)
            c.holdout.append([float(v) for v in row["holdout_x0_error"]])
            c.fit.append([float(v) for v in row["fit_x0_error"]])
            c.holdout_rollout.append([float(v) for v in row.get("holdout_rollout_error", [])])
    return c


def _cut(c: DistillCurves, step: int) -> None:
    keep = [i for i, s in enumerate(c.loss_steps) if s <= step]
    c.loss_steps = [c.loss_steps[i] for i in keep]
    c.loss = [c.loss[i] for i in keep]
    keep = [i for i, s in enumerate(c.error_steps) if s <= step]
    c.error_steps = [c.error_steps[i] for i in keep]
    c.holdout = [c.holdout[i] for i in keep]
    c.fit = [c.fit[i] for i in keep]
    c.holdout_rollout = [c.holdout_rollout[i] for i in keep]


def plot_distill(log_path: Path, out: Path, timesteps: list[int]) -> Path:
    """Write the run's figure to ``out`` (PNG); ``timesteps``: the student's, one curve
    each."""
    from fetalflex.reports.figures import save_figure

    return save_figure(draw_distill(read_curves(log_path), timesteps), out, TITLE)


TITLE = "FetalFlex distillation: loss and student error on held-out layouts"


def draw_distill(c: DistillCurves, timesteps: list[int]) -> Any:
    """The figure: training loss (left); per student step, the x0 error on held-out
    layouts (solid) and on training ones (dashed) (middle); where rows have it, the
    free-running state error on held-out layouts (right); a dotted line where the number
    of trajectories changed. Error rows of another step count are left out."""
    import matplotlib.pyplot as plt

    from fetalflex.distill.student import LOG_EVERY

    k_all = len(timesteps)
    rows = [i for i, h in enumerate(c.holdout) if len(h) == k_all == len(c.fit[i])]
    steps = [c.error_steps[i] for i in rows]
    rolled = [i for i in rows if len(c.holdout_rollout[i]) == k_all]
    fig, axes = plt.subplots(1, 3 if rolled else 2, figsize=(20 if rolled else 14, 4.4),
                             sharex=True)
    a, b = axes[0], axes[1]
    a.plot(c.loss_steps, c.loss, lw=1)
    a.set_yscale("log")
    a.set_xlabel("student training step")
    a.set_ylabel(f"x0 loss of a batch (mean of {LOG_EVERY} steps, log)")
    a.set_title("training loss (on teacher trajectories)")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, t in enumerate(timesteps):
        col = colours[k % len(colours)]
        b.plot(steps, [c.holdout[i][k] for i in rows], color=col, marker=".",
               label=f"step {k + 1} (t={t}): held-out layouts")
        b.plot(steps, [c.fit[i][k] for i in rows], color=col, ls="--", marker="x",
               label=f"step {k + 1}: training layouts")
    b.set_yscale("log")
    b.set_xlabel("student training step")
    b.set_ylabel("x0 error vs the teacher (MSE, log)")
    b.set_title("EMA student vs teacher, per student step (from the teacher's state)")
    if rolled:
        r = axes[2]
        for k in range(k_all):
            r.plot([c.error_steps[i] for i in rolled],
                   [c.holdout_rollout[i][k] for i in rolled],
                   color=colours[k % len(colours)], marker=".",
                   label=f"after step {k + 1}" + (" (the image)" if k + 1 == k_all else ""))
        r.set_yscale("log")
        r.set_xlabel("student training step")
        r.set_ylabel("own state vs teacher's state (MSE, log)")
        r.set_title("free-running student, held-out layouts")
        r.legend(fontsize=7)
    for ax in axes:
        for step, n in c.starts:
            ax.axvline(step, color="grey", lw=0.8, ls=":")
            ax.annotate(f"{n} trajectories from here", (step, 1),
                        xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                        fontsize=7, color="grey")
    if steps:
        b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(TITLE)
    return fig
