"""The report of ``fetalflex evaluate-real``: a Markdown table against the issue's targets
and labelled figures.

Figures that show real scans (``real_vs_generated.png``) contain the data sets' pixels:
they are written for the user's own eyes and must not be committed or published with the
code (the data sets' terms here: no copies of their images in the repository);
``generated_by_plane.png`` holds generated scans only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fetalflex.reports.figures import image_panel, plt, save_figure


def _f(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _iv(iv: list[float], nd: int = 3) -> str:
    return f"[{_f(iv[0], nd)}, {_f(iv[1], nd)}]"


def markdown(res: dict[str, Any]) -> str:
    g = res.get("guidance")
    smp = res.get("sampling")
    lines = [f"# evaluate-real: model `{res['model'][:12]}`, appearance {res['appearance']}"
             + (f", {smp['sampler']} {smp['steps']} steps" if smp else "")
             + (f", {smp['precision']} graph" if smp and smp.get("precision") else "")
             + (f", guidance {g:g}" if g is not None else ""),
             "", f"World: {res['world']}. {res['n_train']} training / {res['n_val']} validation "
             "scans.", "", "## Plane reader: accuracy on generated vs on real validation scans",
             "", "| plane | n | real | generated | ratio (target >= 0.9) |",
             "| --- | --- | --- | --- | --- |"]
    base = res.get("baseline", {})
    for p, r in res["planes"].items():
        lines.append(f"| {p} | {r['n']} | {_f(r['real_accuracy'])} {_iv(r['real_interval'])} | "
                     f"{_f(r['generated_accuracy'])} {_iv(r['generated_interval'])} | "
                     f"{_f(r['ratio'], 2)} |")
    lines += ["", "## Frechet distance (reader features, PCA) and grey-level W1, per plane "
              "group (generated half A vs real half B, beside real A vs real B)", "",
              "| group | FD generated | FD floor | FD ratio (target <= 2) | W1 generated | "
              "W1 floor | W1 ratio | mean grey real / generated |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g, r in res["groups"].items():
        lines.append(f"| {g} | {_f(r['fd_generated'], 2)} | {_f(r['fd_floor'], 2)} | "
                     f"{_f(r['fd_ratio'], 2)} | {_f(r['w1_generated'], 1)} | "
                     f"{_f(r['w1_floor'], 1)} | {_f(r['w1_ratio'], 2)} | "
                     f"{_f(r['mean_grey_real'], 1)} / {_f(r['mean_grey_generated'], 1)} |")
    fr = res.get("frd")
    lines += ["", "## Frechet Radiomics Distance (frd-score), per plane group", ""]
    if isinstance(fr, dict):
        lines += ["| group | FRD generated | FRD floor | ratio (target <= 2) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {g} | {_f(r['frd_generated'], 2)} | {_f(r['frd_floor'], 2)} | "
                  f"{_f(r['frd_ratio'], 2)} |" for g, r in fr.items()]
    else:
        lines.append(str(fr))
    h = res.get("head") or {}
    if h:
        lines += ["", f"## Head outline control (HC18 validation, {h['n']} scans)", "",
                  "| images | Dice vs outline | abs. HC difference (mm) | no head read |",
                  "| --- | --- | --- | --- |"]
        for k, label in (("real", "real scans (segmenter's own error)"),
                         ("generated", "generated for the requested outlines")):
            r = h[k]
            lines.append(f"| {label} | {_f(r['dice'])} {_iv(r['dice_interval'])} | "
                         f"{_f(r['hc_abs_error_mm'], 2)} {_iv(r['hc_interval'], 2)} | "
                         f"{r['no_head_read']} |")
        lines.append(f"\nHC error ratio generated / real: {_f(h['hc_error_ratio'], 2)} "
                     "(target <= 1.5; Dice target >= 0.95).")
    tw = res.get("twins") or {}
    if tw:
        ok = sum(1 for r in tw.values() if r["sign_ok"])
        lines += ["", f"## Anomaly twins in {res['appearance']} appearance (template anatomy, "
                  "edited region's mean grey change)", "",
                  "| plane preset | n | simulator | generated | same sign |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {k} | {r['n']} | {r['delta_simulator']:+.1f} | "
                  f"{r['delta_generated']:+.1f} | {'yes' if r['sign_ok'] else 'NO'} |"
                  for k, r in tw.items()]
        lines.append(f"\nSame sign as the simulator: {ok}/{len(tw)} (target: every preset).")
    c = res["copying"]
    lines += ["", "## No copying: highest correlation with any real training scan", "",
              f"generated: mean {_f(c['generated_mean'])}, max {_f(c['generated_max'])}; real "
              f"validation: mean {_f(c['real_val_mean'])}, max {_f(c['real_val_max'])} "
              "(target: generated not higher)."]
    if base:
        lines += ["", f"## Baseline `{base['model'][:12]}` (phantom appearance) on the same "
                  "requests", "", "| plane | generated accuracy |", "| --- | --- |"]
        lines += [f"| {p} | {_f(r['generated_accuracy'])} |" for p, r in base["planes"].items()]
        lines += ["", "| group | FD ratio | W1 ratio |", "| --- | --- | --- |"]
        lines += [f"| {g} | {_f(r['fd_ratio'], 2)} | {_f(r['w1_ratio'], 2)} |"
                  for g, r in base["groups"].items()]
    return "\n".join(lines) + "\n"


def examples_figure(path: Path, planes: NDArray[np.str_], generated: NDArray[np.uint8],
                    order: tuple[str, ...], real: NDArray[np.uint8] | None = None,
                    per_plane: int = 4, title: str = "") -> Path:
    """Per plane (rows): ``per_plane`` generated scans, and (``real`` given) as many real
    validation scans beside them, each panel labelled."""
    rows = [p for p in order if (planes == p).any()]
    cols = per_plane * (2 if real is not None else 1)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.75 * len(rows)),
                             squeeze=False)
    for r, p in enumerate(rows):
        idx = np.nonzero(planes == p)[0][:per_plane]
        for c in range(cols):
            ax = axes[r][c]
            k = c % per_plane
            src = generated if (real is None or c >= per_plane) else real
            kind = "generated" if src is generated else "real (val)"
            if k < len(idx):
                image_panel(ax, src[idx[k]], f"{p}: {kind}")
            else:
                ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, title)
