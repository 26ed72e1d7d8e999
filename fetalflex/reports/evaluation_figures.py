"""Figures of ``fetalflex evaluate``: every panel says what it shows (phantom world only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fetalflex.anatomy.render import colourize
from fetalflex.reports.figures import SYNTHETIC, image_panel, plt, save_figure


def sample_grid(rows: list[dict[str, Any]], path: Path, res: dict[str, Any]) -> Path:
    """Per plane: requested layout | GENERATED | phantom of the same layout | segmenter
    reading of the generated image."""
    cols = ("requested layout", "GENERATED", "phantom (simulator)\nof the same layout",
            "segmenter reading\nof the generated image")
    fig, axes = plt.subplots(len(rows), 4, figsize=(8.4, 2.2 * len(rows) + 0.8),
                             squeeze=False, layout="constrained")
    for r, row in enumerate(rows):
        panels = (colourize(row["layout"]), row["generated"], row["phantom"],
                  colourize(row["read"]))
        for c, img in enumerate(panels):
            image_panel(axes[r][c], img, cols[c] if r == 0 else "")
        axes[r][0].set_ylabel(row["plane"], fontsize=11)
    fig.suptitle(f"{SYNTHETIC}\n{res.get('sampler', 'ddim')}-{res['default_steps']}, "
                 f"guidance {res['guidance']}, {res['appearance']} look, "
                 f"{res['image_size']}x{res['image_size']}", fontsize=9)
    return save_figure(fig, path, "evaluation sample grid: layout | generated | phantom of "
                                  "the same layout | segmenter reading of the generated image")


def steps_figure(res: dict[str, Any], path: Path) -> Path:
    """Adherence / ceiling and brightness correlation against sampler steps, per plane."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), squeeze=False)
    ax1, ax2, ax3 = axes[0]
    for plane, row in res["planes"].items():
        st = [q["steps"] for q in row["by_steps"]]
        ax1.plot(st, [q["adherence_over_ceiling"] or np.nan for q in row["by_steps"]],
                 marker="o", label=plane)
        line = ax2.plot(st, [q["brightness_rank_corr"] for q in row["by_steps"]],
                        marker="o", label=plane)[0]
        ax2.axhline(row["brightness_corr_ceiling"], color=line.get_color(), ls=":", lw=0.8)
        ax3.plot(st, [q["texture_generated"]["fluid_mean"] for q in row["by_steps"]],
                 marker="o", label=f"{plane} generated")
        ax3.axhline(row["texture_phantom"]["fluid_mean"], color=line.get_color(), ls=":",
                    lw=0.8)
    for ax, yl, title in (
        (ax1, "adherence Dice / segmenter ceiling", "Anatomy adherence vs steps"),
        (ax2, "Spearman rho, structure brightness", "Brightness vs phantom (dotted: ceiling)"),
        (ax3, "fluid mean grey level", "Fluid brightness (dotted: phantom)"),
    ):
        ax.set_xscale("log")
        ax.set_xticks(res["steps"])
        ax.set_xticklabels([str(s) for s in res["steps"]])
        ax.set_xlabel(f"{res.get('sampler', 'ddim')} steps")
        ax.set_ylabel(yl)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Quality against sampler steps (guidance {res['guidance']}; phantom world)",
                 fontsize=10)
    return save_figure(fig, path, "evaluation: quality against sampler steps")


def twins_figure(examples: list[dict[str, Any]], path: Path) -> Path:
    """Per preset: generated normal | generated twin | phantom normal | phantom abnormal,
    with the edited pixels outlined and each image's mean change inside them."""
    cols = ("GENERATED normal", "GENERATED twin\n(repaint)", "phantom normal",
            "phantom abnormal")
    fig, axes = plt.subplots(len(examples), 4, figsize=(7.6, 1.95 * len(examples) + 0.8),
                             squeeze=False, layout="constrained")
    for r, ex in enumerate(examples):
        for c, key in enumerate(("normal", "twin", "phantom_normal", "phantom_abnormal")):
            image_panel(axes[r][c], ex[key], cols[c] if r == 0 else "")
            axes[r][c].contour(ex["changed"], levels=[0.5], colors="yellow", linewidths=0.6)
        axes[r][0].set_ylabel(ex["preset"].replace("_", " ").replace(" ", "\n", 1),
                              fontsize=8)
        axes[r][1].set_xlabel(f"edited pixels {ex['d_gen']:+.0f} grey levels", fontsize=7)
        axes[r][3].set_xlabel(f"edited pixels {ex['d_sim']:+.0f} grey levels", fontsize=7)
    fig.suptitle(f"{SYNTHETIC}\nAnomaly twins; yellow: the pixels whose label the preset "
                 "changed", fontsize=9)
    return save_figure(fig, path, "evaluation: anomaly twins, generated vs simulator")
