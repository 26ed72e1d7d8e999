"""The figure of a distillation run (``OUT/distill.png``), read from its ``log.jsonl``:
the training loss, and the EMA student's x0 error per student step on held-out layouts
beside the same error on training ones. Where the run was resumed with more teacher
trajectories, a vertical line says from which step on how many were trained on."""

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
    starts: list[tuple[int, int]] = field(default_factory=list)  # (step, trajectories)


def read_curves(log_path: Path) -> DistillCurves:
    """Parse ``log.jsonl``: loss rows, x0-error rows (one per checkpoint step; a step
    measured twice counts once) and start rows. Unknown rows are skipped; a truncated
    last line (a run killed while writing) is ignored."""
    c = DistillCurves()
    seen: set[int] = set()
    for line in log_path.read_text().splitlines():
        try:
            row: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = int(row.get("step", -1))
        if "loss" in row:
            c.loss_steps.append(step)
            c.loss.append(float(row["loss"]))
        elif "holdout_x0_error" in row and step not in seen:
            seen.add(step)
            c.error_steps.append(step)
            c.holdout.append([float(v) for v in row["holdout_x0_error"]])
            c.fit.append([float(v) for v in row["fit_x0_error"]])
        elif row.get("event") == "start":
            c.starts.append((step, int(row["trajectories"])))
    return c


def plot_distill(log_path: Path, out: Path, timesteps: list[int]) -> Path:
    """Write the run's figure to ``out`` (PNG); ``timesteps``: the student's, one curve
    each."""
    import matplotlib.pyplot as plt

    from fetalflex.reports.figures import save_figure

    c = read_curves(log_path)
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 4.4), sharex=True)
    a.plot(c.loss_steps, c.loss, lw=1)
    a.set_yscale("log")
    a.set_xlabel("student training step")
    a.set_ylabel("x0 loss of a batch (mean of 25 steps, log)")
    a.set_title("training loss (on teacher trajectories)")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, t in enumerate(timesteps):
        col = colours[k % len(colours)]
        b.plot(c.error_steps, [h[k] for h in c.holdout], color=col, marker=".",
               label=f"step {k + 1} (t={t}): held-out layouts")
        b.plot(c.error_steps, [f[k] for f in c.fit], color=col, ls="--", marker="x",
               label=f"step {k + 1}: training layouts")
    b.set_yscale("log")
    b.set_xlabel("student training step")
    b.set_ylabel("x0 error vs the teacher (MSE, log)")
    b.set_title("EMA student vs teacher, per student step")
    for ax in (a, b):
        for step, n in c.starts:
            ax.axvline(step, color="grey", lw=0.8, ls=":")
            ax.annotate(f"{n} trajectories from here", (step, 1),
                        xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                        fontsize=7, color="grey")
    if c.error_steps:
        b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    title = "FetalFlex distillation: loss and student error on held-out layouts"
    fig.suptitle(title)
    return save_figure(fig, out, title)
