"""Downstream-utility report: Markdown table, AUC and accuracy plots, an example strip."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from fetalflex.data.phantom_set import render_phantom
from fetalflex.io.png import write_image
from fetalflex.reports.figures import new_figure, save_figure


class TwinExamples(Protocol):
    """What the example strip shows, per preset (``evaluation.twins.SyntheticSet`` has it;
    the report reads results and never imports the evaluation)."""

    twins: dict[str, NDArray[np.uint8]]
    controls: dict[str, NDArray[np.uint8]]
    references: dict[str, NDArray[np.uint8]]
    planes: dict[str, list[str]]

LABELS = {"synthetic": "normal + FetalFlex twins (+ repainted normals)",
          "synthetic_no_control": "normal + FetalFlex twins (no control)",
          "normal_only": "normal only (Mahalanobis)",
          "oracle": "normal + real abnormal phantoms (oracle)"}


def _conditions(result: dict[str, Any]) -> list[str]:
    """The training regimes this run measured, in the labels' order."""
    rows = result["anomaly"]
    return [c for c in LABELS if rows and all(c in r for r in rows)]


def _reader_line(result: dict[str, Any]) -> str:
    """The classifiers' recipe in words (results before session 15 name no reader)."""
    r = result.get("reader")
    if not r:
        return "Classifier: the `small` reader (results written before readers were named)."
    line = f"Classifier: the `{r['name']}` reader, {r['steps']} training steps"
    if "lr" in r:
        line += (f", peak learning rate {r['lr']:g}, "
                 + ("class-balanced batches" if r["balanced"] else "class-weighted loss")
                 + f", shifts of up to {r['max_shift']} px"
                 + (", left-right flips" if r["flip"] else "")
                 + (", bfloat16 autocast" if r["bf16"] else ", fp32"))
    return line + "."


def markdown(result: dict[str, Any]) -> str:
    conds = _conditions(result)
    seeds = len(result["options"]["train_seeds"])
    lines = ["Phantom world (simulator phantoms, not patients). AUC: mean of "
             f"{seeds} training seeds [95% bootstrap interval over the test set]. "
             + _reader_line(result), "",
             "| preset | planes | " + " | ".join(LABELS[c] for c in conds) + " |",
             "|---|---|" + "---|" * len(conds)]
    for r in result["anomaly"]:
        cells = [f"{r[c]['auc_mean']:.3f} [{r[c]['auc_ci95'][0]:.2f}, "
                 f"{r[c]['auc_ci95'][1]:.2f}]" for c in conds]
        lines.append(f"| {r['preset']} | {' '.join(r['planes'])} | " + " | ".join(cells) + " |")
    means = [np.mean([r[c]["auc_mean"] for r in result["anomaly"]]) for c in conds]
    lines.append("| **mean** | | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")
    if all("auc_ensemble" in r[c] for r in result["anomaly"] for c in conds):
        ens = [np.mean([r[c]["auc_ensemble"] for r in result["anomaly"]]) for c in conds]
        lines.append("| mean, seed ensemble | | " + " | ".join(f"{m:.3f}" for m in ens) + " |")
    if not result["plane_classifier"]:
        return "\n".join(lines) + "\n"
    lines += ["", "| real per plane | real only | real + synthetic | synthetic only |",
              "|---|---|---|---|"]
    for r in result["plane_classifier"]:
        if "synthetic_only" in r:
            lines.append(f"| 0 | | | {r['synthetic_only']['accuracy_mean']:.3f} |")
        else:
            lines.append(f"| {r['real_per_plane']} | {r['real_only']['accuracy_mean']:.3f} | "
                         f"{r['real_plus_synthetic']['accuracy_mean']:.3f} | |")
    return "\n".join(lines) + "\n"


def _auc_plot(result: dict[str, Any], out: Path) -> None:
    rows = result["anomaly"]
    fig, axes = new_figure(width=11, height=4.8)
    ax = axes[0][0]
    x = np.arange(len(rows))
    conds = _conditions(result)
    w = 0.8 / len(conds)
    for i, c in enumerate(conds):
        m = np.array([r[c]["auc_mean"] for r in rows])
        lo = np.array([r[c]["auc_ci95"][0] for r in rows])
        hi = np.array([r[c]["auc_ci95"][1] for r in rows])
        ax.bar(x + (i - (len(conds) - 1) / 2) * w, m, w, label=LABELS[c],
               yerr=[np.clip(m - lo, 0, None), np.clip(hi - m, 0, None)], capsize=2)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [r["preset"].replace("_", "\n") for r in rows], fontsize=7)
    ax.set_ylim(0.3, 1.02)
    ax.set_ylabel("test AUC (simulator phantoms)")
    reader = result.get("reader")
    seeds = len(result["options"]["train_seeds"])
    ax.set_title("Normal vs abnormal per preset: which training data? (phantom world)"
                 + (f"\nclassifier: '{reader['name']}' reader, {reader['steps']} steps; "
                    f"bars: mean of {seeds} training seeds, whiskers: 95% bootstrap over the "
                    "test set" if reader else ""), fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(conds))
    save_figure(fig, out, "downstream AUC per preset; phantom world, not patients")


def _plane_plot(result: dict[str, Any], out: Path) -> None:
    rows = [r for r in result["plane_classifier"] if "real_only" in r]
    syn = [r for r in result["plane_classifier"] if "synthetic_only" in r]
    fig, axes = new_figure(width=5.5, height=4)
    ax = axes[0][0]
    n = [r["real_per_plane"] for r in rows]
    ax.plot(n, [r["real_only"]["accuracy_mean"] for r in rows], "o-", label="real only")
    ax.plot(n, [r["real_plus_synthetic"]["accuracy_mean"] for r in rows], "s-",
            label=f"real + {rows[0]['synthetic_per_plane']} synthetic/plane")
    if syn:
        ax.axhline(syn[0]["synthetic_only"]["accuracy_mean"], color="grey", ls="--",
                   label="synthetic only")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("real phantoms per plane")
    ax.set_ylabel("7-plane accuracy (held-out phantoms)")
    ax.set_title("Plane classifier: does synthetic data help?")
    ax.legend(fontsize=8)
    save_figure(fig, out, "plane classifier accuracy vs real-set size; phantom world")


def example_strip(result: dict[str, Any], synth: TwinExamples, scale: int = 2,
                  per_preset: int = 2) -> np.ndarray:
    """Rows per preset: reference | repainted normal | FetalFlex twin | real abnormal."""
    size = result["image_size"]
    tiles: list[np.ndarray] = []
    names = []
    for name in synth.twins:
        for k in range(min(per_preset, len(synth.twins[name]))):
            plane = synth.planes[name][k]
            oracle, _, _ = render_phantom(plane, 42 + k, size, name)
            tiles.append(np.concatenate([synth.references[name][k], synth.controls[name][k],
                                         synth.twins[name][k], oracle], axis=1))
            names.append(f"{name} ({plane})")
    sheet = np.concatenate(tiles, axis=0)
    im = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale),
                                       Image.Resampling.NEAREST).convert("RGB")
    draw = ImageDraw.Draw(im)
    for r, text in enumerate(names):
        draw.text((3, r * size * scale + 2), text, fill=(255, 255, 0))
    for c, text in enumerate(("real normal", "repainted normal", "FetalFlex twin",
                              "real abnormal")):
        draw.text((c * size * scale + 3, im.height - 12), text, fill=(0, 255, 255))
    return np.asarray(im)


def write_downstream_report(result: dict[str, Any], synth: TwinExamples, out: Path) -> None:
    (out / "downstream.md").write_text(markdown(result))
    _auc_plot(result, out / "downstream_auc.png")
    if result["plane_classifier"]:
        _plane_plot(result, out / "downstream_plane.png")
    write_image(out / "downstream_examples.png", example_strip(result, synth),
                {"Content": "FetalFlex downstream examples (phantom world)"})
