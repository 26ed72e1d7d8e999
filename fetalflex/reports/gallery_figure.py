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
    ncols = max(len(planes), 4)
    rows = 2 + len(pairs)
    fig = plt.figure(figsize=(1.7 * ncols, 1.9 * rows + 0.6))
    grid = fig.add_gridspec(rows, ncols)
    for c, t in enumerate(planes):
        _panel(fig.add_subplot(grid[0, c]), colourize(t["layout"]), f"{t['plane']} layout",
               gray=False)
        _panel(fig.add_subplot(grid[1, c]), t["image"], f"{t['plane']} GENERATED")
    w = ncols // 4
    for r, p in enumerate(pairs, start=2):
        cells = [grid[r, k * w:(k + 1) * w] for k in range(4)]
        name = p["preset"].replace("_", " ")
        _panel(fig.add_subplot(cells[0]), colourize(p["layout"]),
               f"{p['plane']} normal layout", gray=False)
        _panel(fig.add_subplot(cells[1]), p["image"], "GENERATED normal")
        ax = fig.add_subplot(cells[2])
        _panel(ax, p["twin"], f"GENERATED twin: {name}")
        ax.contour(p["region"], levels=[0.5], colors="yellow", linewidths=0.5)
        _panel(fig.add_subplot(cells[3]), colourize(p["twin_layout"]), f"{name} layout",
               gray=False)
    fig.suptitle(f"{SYNTHETIC}\n{provenance}; yellow outline: the repainted region "
                 "(outside it the twin equals the normal image)", fontsize=8)
    return save_figure(fig, path, "FetalFlex gallery: per plane layout and generated image; "
                                  "counterfactual pairs: normal layout | normal | twin | "
                                  "edited layout (synthetic)")
