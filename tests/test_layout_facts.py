"""A label map written by `fetalflex layout` keeps its field of view and GA when it comes
back as `generate --layout` (before: 100 mm and no GA, silently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetalflex.anatomy.layout import DEFAULT_FIELD_MM
from fetalflex.anatomy.templates import sample_template
from fetalflex.cli import main
from fetalflex.generate_cli import read_layout
from fetalflex.io.png import read_layout_facts


def test_layout_png_carries_field_and_ga(tmp_path: Path) -> None:
    lab = tmp_path / "tt_labels.png"
    assert main(["layout", "--plane", "TT", "--seed", "3", "--size", "64",
                 "--out", str(tmp_path / "tt.png"), "--label-map", str(lab)]) == 0
    sl = sample_template("TT", 3)
    assert read_layout_facts(lab) == pytest.approx((sl.field_mm, sl.ga_weeks))
    got = read_layout(lab, "TT", 64, None, None)
    assert (got.field_mm, got.ga_weeks) == pytest.approx((sl.field_mm, sl.ga_weeks))
    assert got.field_mm != DEFAULT_FIELD_MM
    # what the caller says wins over what the file says
    given = read_layout(lab, "TT", 64, 90.0, 25.0)
    assert (given.field_mm, given.ga_weeks) == (90.0, 25.0)
