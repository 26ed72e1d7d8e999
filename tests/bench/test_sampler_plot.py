"""The sampler-cost figure, re-plotted from the committed JSON: no two texts overlap (tick
labels, point names, axis labels, titles) and nothing is cut off at the figure's edge."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _text_boxes(fig: Any) -> list[tuple[str, Any]]:
    """Every drawn text and its box in pixels: tick labels inside the view limits (matplotlib
    keeps label objects for ticks outside them, never drawn) and every other text."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks: set[int] = set()
    drawn: list[Text] = []
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                ticks.update((id(tick.label1), id(tick.label2)))
                if min(lo, hi) <= tick.get_loc() <= max(lo, hi):
                    drawn += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    drawn += [t for t in fig.findobj(Text) if id(t) not in ticks and t.get_visible()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in drawn
            if t.get_text().strip()]


@pytest.mark.parametrize("name", ["sampler_cost", "sampler_cost_v2"])
def test_no_text_overlaps_and_all_inside(name: str, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from bench.sampler_cost import _case_label, cost_figure, plot_from_json
    from fetalflex.io.png import read_text_chunks

    rows = json.loads((ROOT / "docs" / "benchmarks" / f"{name}.json").read_text())["rows"]
    fig = cost_figure(rows)
    try:
        boxes = _text_boxes(fig)
        width, height = fig.canvas.get_width_height()
        texts = {t for t, _ in boxes}
        for row in rows:  # every point is named
            assert any(t.startswith(_case_label(row["case"])) for t in texts), row["case"]
        for (ta, a), (tb, b) in combinations(boxes, 2):
            assert not a.overlaps(b), (ta, tb)
        for t, box in boxes:
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, t
    finally:
        plt.close(fig)
    png = plot_from_json(ROOT / "docs" / "benchmarks" / f"{name}.json", tmp_path / "f.png")
    assert read_text_chunks(png)["Synthetic"] == "true"
