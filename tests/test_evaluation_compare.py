"""compare-evaluations: the side-by-side table of `fetalflex evaluate` results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fetalflex.cli import main
from fetalflex.reports.evaluation_compare import compare_markdown, rows_per_image


def _result(steps: int, guidance: float | None, adherence: float, sign_ok: bool
            ) -> dict[str, Any]:
    row = {"steps": steps, "adherence_over_ceiling": adherence, "brightness_rank_corr": 0.9,
           "tissue_histogram_w1": 12.0,
           "texture_generated": {"tissue_mean": 101.0, "fluid_mean": 20.0}}
    twin = {"n": 4, "delta_simulator": 40.0, "delta_generated": 30.0 if sign_ok else -5.0,
            "sign_ok": sign_ok, "size_ratio": 0.75}
    return {"default_steps": steps, "guidance": guidance, "sampler": "ddim",
            "planes": {"TV": {"by_steps": [row], "twins": {"absent_csp": twin}}},
            "summary": {"twins_sign_ok": int(sign_ok), "twins_total": 1}}


def test_the_table_reads_each_result_at_its_own_default() -> None:
    md = compare_markdown([("teacher", _result(6, 2.0, 1.01, True)),
                           ("student", _result(4, 1.0, 0.97, False))])
    assert "| TV | adherence / ceiling | 1.010 | 0.970 |" in md
    assert "1/1 presets right-signed; absent_csp +30" in md
    assert "0/1 presets right-signed; absent_csp -5" in md
    assert "| all | denoiser rows per default image | 12 (ddim 6, guidance 2) | 4 (ddim 4, " \
           "guidance 1) |" in md
    assert rows_per_image(_result(4, None, 1.0, True)) == 8  # unknown guidance: guided


def test_the_command_names_a_file_that_is_not_an_evaluation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(json.dumps(_result(6, 2.0, 1.0, True)))
    bad.write_text(json.dumps({"x": 1}))
    assert main(["compare-evaluations", str(good), str(good), "--names", "s0", "s1",
                 "--out", str(tmp_path / "t.md")]) == 0
    assert "| plane | figure | s0 | s1 |" in (tmp_path / "t.md").read_text()
    capsys.readouterr()
    assert main(["compare-evaluations", str(good), str(bad)]) == 2
    assert "b.json: not written by `fetalflex evaluate`" in capsys.readouterr().err
