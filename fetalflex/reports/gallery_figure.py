"""The gallery figure (``fetalflex gallery``): every panel labelled, every image marked
synthetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fetalflex.anatomy.render import colourize
from fetalflex.reports.evaluation_figures import SYNTHETIC
from fetalflex.reports.figures import plt, save_figure


def _panel(ax: Any, img: Any, title: str, gray: bool = True) -> None:
    ax.imshow(img, cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def gallery_figure(planes: list[dict[str, Any]], pairs: list[dict[str, Any]], path: Path,
                   provenance: str) -> Path:
    """Top two rows: per plane, the template layout and the GENERATED image. Below, one
    row per counterfactual pair: normal layout | GENERATED normal | GENERATED twin (edit
    region outlined) | edited layout."""
    per_row = 2  # pairs per row, four panels each
    pair_rows = (len(pairs) + per_row - 1) // per_row
    rows = 2 + pair_rows
    units = len(planes) * 4 * per_row  # columns of the grid: planes and pair panels both fit
    fig = plt.figure(figsize=(14, 2.15 * rows + 0.8), layout="constrained")
    grid = fig.add_gridspec(rows, units)
    w = units // len(planes)
    for c, t in enumerate(planes):
        _panel(fig.add_subplot(grid[0, c * w:(c + 1) * w]), colourize(t["layout"]),
               f"{t['plane']} layout", gray=False)
        _panel(fig.add_subplot(grid[1, c * w:(c + 1) * w]), t["image"], f"{t['plane']} GENERATED")
    pw = units // (4 * per_row)
    for k, p in enumerate(pairs):
        r, first = 2 + k // per_row, (k % per_row) * 4
        cells = [grid[r, (first + m) * pw:(first + m + 1) * pw] for m in range(4)]
        name = p["preset"].replace("_", " ")
        _panel(fig.add_subplot(cells[0]), colourize(p["layout"]),
               f"{p['plane']} normal layout", gray=False)
        _panel(fig.add_subplot(cells[1]), p["image"], "GENERATED normal")
        ax = fig.add_subplot(cells[2])
        _panel(ax, p["twin"], f"GENERATED twin\n{name}")
        ax.contour(p["region"], levels=[0.5], colors="yellow", linewidths=0.5)
        _panel(fig.add_subplot(cells[3]), colourize(p["twin_layout"]),
               f"edited layout\n{name}", gray=False)
    fig.suptitle(f"{SYNTHETIC}\n{provenance}; yellow outline: the repainted region "
                 "(outside it the twin equals the normal image)", fontsize=8)
    return save_figure(fig, path, "FetalFlex gallery: per plane layout and generated image; "
                                  "counterfactual pairs: normal layout | normal | twin | "
                                  "edited layout (synthetic)")
