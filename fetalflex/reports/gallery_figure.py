"""The gallery figure (``fetalflex gallery``): every panel labelled, every image marked
synthetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fetalflex.anatomy.render import colourize
from fetalflex.reports.figures import SYNTHETIC, image_panel, plt, save_figure


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
        cols = slice(c * w, (c + 1) * w)
        image_panel(fig.add_subplot(grid[0, cols]), colourize(t["layout"]),
                    f"{t['plane']} layout")
        image_panel(fig.add_subplot(grid[1, cols]), t["image"], f"{t['plane']} GENERATED")
    pw = units // (4 * per_row)
    for k, p in enumerate(pairs):
        r, first = 2 + k // per_row, (k % per_row) * 4
        cells = [grid[r, (first + m) * pw:(first + m + 1) * pw] for m in range(4)]
        name = p["preset"].replace("_", " ")
        image_panel(fig.add_subplot(cells[0]), colourize(p["layout"]),
                    f"{p['plane']} normal layout")
        image_panel(fig.add_subplot(cells[1]), p["image"], "GENERATED normal")
        ax = fig.add_subplot(cells[2])
        image_panel(ax, p["twin"], f"GENERATED twin\n{name}")
        ax.contour(p["region"], levels=[0.5], colors="yellow", linewidths=0.5)
        image_panel(fig.add_subplot(cells[3]), colourize(p["twin_layout"]),
                    f"edited layout\n{name}")
    fig.suptitle(f"{SYNTHETIC}\n{provenance}; yellow outline: the repainted region "
                 "(outside it the twin equals the normal image)", fontsize=8)
    return save_figure(fig, path, "FetalFlex gallery: per plane layout and generated image; "
                                  "counterfactual pairs: normal layout | normal | twin | "
                                  "edited layout (synthetic)")
