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


def _real(ratio: float, steps: int, guidance: float, sign_ok: bool) -> dict[str, Any]:
    group = {"fd_ratio": 2.5, "w1_ratio": 3.0, "mean_grey_generated": 44.0,
             "mean_grey_real": 42.0}
    return {"world": "real scans", "planes": {"TC": {"ratio": ratio}},
            "groups": {"head": group}, "frd": {"head": {"frd_ratio": 1.9}},
            "head": {"generated": {"dice": 0.975}, "hc_error_ratio": 1.03},
            "copying": {"generated_mean": 0.6, "real_val_mean": 0.612},
            "twins": {"TV microcephaly": {"sign_ok": sign_ok}},
            "sampling": {"sampler": "dpmsolver++", "steps": steps, "guidance": guidance,
                         "guidance_below_t": 900}}


def test_evaluate_real_results_compare_side_by_side(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher, student = tmp_path / "t" / "real_eval.json", tmp_path / "s" / "real_eval.json"
    for p, d in ((teacher, _real(0.05, 6, 2.0, True)), (student, _real(0.16, 4, 1.0, False))):
        p.parent.mkdir()
        p.write_text(json.dumps(d))
    assert main(["compare-evaluations", str(teacher), str(student)]) == 0
    md = capsys.readouterr().out
    assert "| figure | target | t | s |" in md
    assert "| reader gen / real, TC | >= 0.9 | 0.05 | 0.16 |" in md
    assert "| mean grey gen - real, head | ~0 | +2.0 | +2.0 |" in md
    assert "| twins right-signed | every preset | 1/1 | 0/1 |" in md
    # the guidance interval counts: 6 guided steps minus the one at t = 999
    assert "| denoiser rows per image | - | 11 (dpmsolver++ 6, guidance 2) | 4 (" in md
    phantom = tmp_path / "p.json"
    phantom.write_text(json.dumps(_result(6, 2.0, 1.0, True)))
    assert main(["compare-evaluations", str(teacher), str(phantom)]) == 2
    assert "mix `fetalflex evaluate` and `fetalflex evaluate-real`" in capsys.readouterr().err


def test_columns_are_named_by_folder_or_by_file_stem(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Results copied to one folder (docs/benchmarks/real_eval_v6.json, ...) keep their own
    names; an int8 graph's rows say so."""
    a, b = tmp_path / "real_eval_v6.json", tmp_path / "real_eval_student_int8.json"
    student = _real(0.16, 4, 1.0, True)
    student["sampling"]["precision"] = "int8"
    a.write_text(json.dumps(_real(0.05, 6, 2.0, True)))
    b.write_text(json.dumps(student))
    assert main(["compare-evaluations", str(a), str(b)]) == 0
    md = capsys.readouterr().out
    assert "| figure | target | real_eval_v6 | real_eval_student_int8 |" in md
    assert "| denoiser rows per image | - | 11 (dpmsolver++ 6, guidance 2) | " \
           "4 (dpmsolver++ 4, guidance 1, int8) |" in md


def test_plane_contrast_rows_are_named_per_plane(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Weights with plane contrast: the row count of the planes that carry it beside the
    others' (12 steps: 10 in the guidance interval, one contrast row each)."""
    a = tmp_path / "real_eval_contrast.json"
    d = _real(0.6, 12, 2.0, True)
    d["sampling"] |= {"plane_contrast": {"TV": 3.0, "TC": 3.0},
                      "plane_contrast_groups": [["TV", "TT", "TC"]]}
    a.write_text(json.dumps(d))
    assert main(["compare-evaluations", str(a)]) == 0
    md = capsys.readouterr().out
    assert ("| denoiser rows per image | - | 22 (dpmsolver++ 12, guidance 2, plane contrast "
            "TV 3, TC 3: 32 rows for those planes) |") in md
