"""The report of ``fetalflex evaluate-downstream-real``: Markdown tables against the issue's
targets and one labelled figure (each task's figure against the number of real training
scans, per arm, with 95 % bootstrap intervals). Generated and real pixels never appear in
it: only figures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from fetalflex.reports.figures import plt, save_figure


def _f(x: float | None, nd: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _iv(iv: list[float], nd: int = 3) -> str:
    return f"[{_f(iv[0], nd)}, {_f(iv[1], nd)}]"


def markdown(res: dict[str, Any]) -> str:
    o = res["options"]
    lines = [f"# evaluate-downstream-real: model `{res['model'][:12]}`, appearance "
             f"{res['appearance']}, guidance {res['guidance']:g}", "",
             f"World: {res['world']}. {res['n_train']} training / "
             f"{res['n_val']} validation scans. Seeds per cell: {len(o['seeds'])}; intervals: "
             "95 % bootstrap over validation scans of the seed-averaged figure.", ""]
    h = res.get("heads")
    if h:
        lines += ["## Head segmentation and biometry (HC18 validation scans)", "",
                  f"{h['n_train_heads']} real training heads, {h['n_val_heads']} validation "
                  f"heads, {h['n_synthetic']} generated heads (requested outlines drawn over "
                  f"the real range); {_batch_mix(o.get('segmenter_real_share'))}"
                  f"segmenter {o['segmenter_steps']} steps.", "",
                  "| arm | real | generated | Dice | abs. HC difference (mm) | no head read |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, c in h["cells"].items():
            lines.append(f"| {name} | {c['n_real']} | {c['n_synthetic']} | {_f(c['dice'], 4)} "
                         f"{_iv(c['dice_interval'], 4)} | {_f(c['hc_abs_mm'], 2)} "
                         f"{_iv(c['hc_interval'], 2)} | {c['no_head_read']} |")
        lines += ["", *_paired_lines(h.get("paired", {}), (("dice", "Dice", 4),
                                                            ("hc_abs_mm", "abs. HC mm", 2)))]
    mix = _batch_mix(o.get("reader_real_share"))
    for task, title in (("planes", "Plane classification, 4 classes (FETAL_PLANES_DB "
                                   "validation patients)"),
                        ("brain_planes", "Brain planes TV / TT / TC (FETAL_PLANES_DB "
                                         "validation patients)")):
        p = res.get(task)
        if not p:
            continue
        lines += [f"## {title}", "", "Classes " + ", ".join(
            f"{c} ({'/'.join(v)}): {a} train / {b} val" for (c, v), a, b in
            zip(p["classes"].items(), p["n_train"], p["n_val"], strict=True)) +
            f"; {p['n_synthetic_per_class']} generated per class (layouts: "
            f"{o.get('synth_layouts', 'empty')}); {mix}reader {o['reader_steps']} steps.", "",
            "| arm | real | generated | accuracy | macro-F1 |", "| --- | --- | --- | --- | --- |"]
        for name, c in p["cells"].items():
            lines.append(f"| {name} | {c['n_real']} | {c['n_synthetic']} | "
                         f"{_f(c['accuracy'])} {_iv(c['accuracy_interval'])} | "
                         f"{_f(c['macro_f1'])} {_iv(c['macro_f1_interval'])} |")
        lines += ["", *_paired_lines(p.get("paired", {}), (("accuracy", "accuracy", 3),))]
    m = res.get("microcephaly")
    if m:
        lines += ["## Anomaly screening (microcephaly)", ""]
        if "skipped" in m:
            lines.append(f"Skipped: {m['skipped']}.")
        else:
            lines += [f"Cannot be measured here: {m['cannot_measure']}.", "",
                      "Measured instead: generated TT scans for validation outlines at their "
                      f"own size and shrunk x{m['scale']:g}, read back by the segmenter "
                      "trained on all real training heads.", "",
                      "| requested size | n | requested HC (mm) | measured HC (mm) | "
                      "measured / requested | no head read |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for k, r in m["rows"].items():
                lines.append(f"| {k} | {r['n']} | {_f(r['requested_hc_mm'], 1)} | "
                             f"{_f(r['measured_hc_mm'], 1)} | {_f(r['ratio'], 3)} "
                             f"{_iv(r['ratio_interval'], 3)} | {r['no_head_read']} |")
        lines.append("")
    lines.append(f"Wall clock: {res['seconds']:.0f} s (cached cells are not re-run).")
    return "\n".join(lines) + "\n"


def _paired_lines(paired: dict[str, Any], figures: tuple[tuple[str, str, int], ...]
                  ) -> list[str]:
    """Real + synthetic minus real only on the same validation scans, per N."""
    if not paired:
        return []
    out = ["Real + synthetic minus real only, paired on the same validation scans (95 % "
           "bootstrap of the per-scan difference, seed-averaged):", ""]
    for n, fig in paired.items():
        out.append(f"- {n}: " + "; ".join(
            f"{label} {fig[key]['mean']:+.{dp}f} {_iv(fig[key]['interval'], dp)}"
            for key, label, dp in figures if key in fig))
    return [*out, ""]


def _batch_mix(share: float | None) -> str:
    """How real + synthetic batches were drawn, where not from one pool."""
    return f"batches {share:.0%} real in real+synthetic; " if share else ""


def _n_of(name: str) -> str:
    m = re.search(r"N=(\w+)", name)
    return m.group(1) if m else ""


def figure(res: dict[str, Any], path: Path) -> None:
    """One panel per measured figure: value vs real training scans per arm (synthetic
    only: a horizontal band, it uses no real scan)."""
    panels: list[tuple[str, str, str, str]] = []
    if res.get("heads"):
        panels += [("heads", "dice", "dice_interval", "head Dice (HC18 val)"),
                   ("heads", "hc_abs_mm", "hc_interval", "abs. HC difference, mm (HC18 val)")]
    for task, label in (("planes", "4-class plane accuracy (FPDB val)"),
                        ("brain_planes", "brain-plane accuracy (FPDB val)")):
        if res.get(task):
            panels.append((task, "accuracy", "accuracy_interval", label))
    if not panels:
        return
    o = res.get("options", {})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (task, key, iv_key, label) in zip(axes[0], panels, strict=True):
        cells = res[task]["cells"]
        ns = []
        for name in cells:
            n = _n_of(name)
            if n and n not in ns:
                ns.append(n)
        xs = np.arange(len(ns))
        share = o.get("segmenter_real_share" if task == "heads" else "reader_real_share")
        mixed = (f"real+synthetic ({share:.0%} real per batch)" if share else
                 "real+synthetic (one pool)")
        for arm, color in (("real", "tab:blue"), ("real+synthetic", "tab:orange")):
            vals = [cells.get(next((c for c in cells if c.startswith(arm + " ")
                                    and _n_of(c) == n), ""), None) for n in ns]
            pts = [(x, v[key], v[iv_key]) for x, v in zip(xs, vals, strict=True) if v]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                            yerr=np.abs(np.array([[p[2][0] for p in pts],
                                                  [p[2][1] for p in pts]])
                                        - np.array([p[1] for p in pts])),
                            marker="o", capsize=3, color=color,
                            label=mixed if arm == "real+synthetic" else arm)
        syn = cells.get("synthetic")
        if syn:
            ax.axhline(syn[key], color="tab:green", ls="--", label="synthetic only")
            ax.axhspan(syn[iv_key][0], syn[iv_key][1], color="tab:green", alpha=0.12)
        ax.set_xticks(xs, ns)
        ax.set_xlabel("real training scans" + (" per class" if task != "heads" else ""))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    title = (f"Real tasks with FetalFlex images (model {res['model'][:12]}, "
             f"{res['appearance']} appearance); validation split")
    # one panel is narrower than the title: break it at the "(" so it stays inside the figure
    fig.suptitle(title if len(panels) > 1 else title.replace(" (", "\n(", 1), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, title)
