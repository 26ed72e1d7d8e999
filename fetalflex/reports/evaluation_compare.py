"""Side by side: several ``fetalflex evaluate`` results (a teacher and its student, two
seeds of one model, two precisions), each at its own default steps, one Markdown table
(``evaluate-real`` results: ``real_eval_compare``).

Rows per plane: adherence / segmenter ceiling, brightness rank correlation, tissue and
fluid means, tissue-histogram W1 and the anomaly twins' signs; then the totals (twins
right-signed, denoiser rows per image). Where two of the results are the same model under
two seeds, their difference is the seed-to-seed spread a third result is read against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fetalflex.reports.real_eval_compare import is_real_eval, real_compare_markdown
from fetalflex.request import denoiser_rows

ROWS: tuple[tuple[str, str], ...] = (
    ("adherence / ceiling", "adherence_over_ceiling"),
    ("brightness rank corr", "brightness_rank_corr"),
    ("tissue mean", "tissue_mean"),
    ("fluid mean", "fluid_mean"),
    ("tissue hist W1", "tissue_histogram_w1"),
)


def load(path: Path) -> dict[str, Any]:
    """An ``evaluate`` (evaluation.json) or ``evaluate-real`` (real_eval.json) result."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable evaluation JSON ({exc})") from None
    if is_real_eval(data):
        return data
    if "planes" not in data or "default_steps" not in data:
        raise ValueError(f"{path}: not written by `fetalflex evaluate` (no planes / "
                         f"default_steps) or `fetalflex evaluate-real` (no world / groups / "
                         f"head)")
    return data


def at_default(plane: dict[str, Any], steps: int) -> dict[str, Any]:
    row = next((r for r in plane["by_steps"] if r["steps"] == steps), None)
    if row is None:
        raise ValueError(f"no row at the default {steps} steps")
    tex = row["texture_generated"]
    return {"adherence_over_ceiling": row["adherence_over_ceiling"],
            "brightness_rank_corr": row["brightness_rank_corr"],
            "tissue_mean": tex["tissue_mean"], "fluid_mean": tex["fluid_mean"],
            "tissue_histogram_w1": row["tissue_histogram_w1"]}


def rows_per_image(data: dict[str, Any]) -> float:
    """Denoiser rows of one default image: a guided step is two rows."""
    g = data.get("guidance")  # None: the weights' recommendation, counted as guided
    return float(denoiser_rows(int(data["default_steps"]), 2.0 if g is None else float(g),
                               data.get("guidance_below_t")))


def compare_markdown(named: list[tuple[str, dict[str, Any]]]) -> str:
    names = [n for n, _ in named]
    head = "| plane | figure | " + " | ".join(names) + " |"
    lines = [head, "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    planes = [p for p in named[0][1]["planes"] if all(p in d["planes"] for _, d in named)]
    for p in planes:
        vals = [at_default(d["planes"][p], int(d["default_steps"])) for _, d in named]
        for label, key in ROWS:
            cells = " | ".join(f"{v[key]:.3f}" if abs(v[key]) < 10 else f"{v[key]:.1f}"
                               for v in vals)
            lines.append(f"| {p} | {label} | {cells} |")
        twins = [d["planes"][p].get("twins") or {} for _, d in named]
        if any(twins):
            cells = " | ".join(
                f"{sum(bool(t['sign_ok']) for t in tw.values())}/{len(tw)} presets right-signed; "
                + ", ".join(f"{k} {t['delta_generated']:+.0f}" for k, t in sorted(tw.items()))
                for tw in twins)
            lines.append(f"| {p} | twins (change of the edited region) | {cells} |")
    totals = " | ".join(f"{d['summary']['twins_sign_ok']}/{d['summary']['twins_total']}"
                        for _, d in named)
    lines.append(f"| all | presets whose twins are right-signed | {totals} |")
    lines.append("| all | denoiser rows per default image | "
                 + " | ".join(f"{rows_per_image(d):.0f} ({d['sampler']} "
                              f"{d['default_steps']}, guidance {_g(d)})"
                              for _, d in named) + " |")
    return "\n".join(lines) + "\n"


DEFAULT_RESULT_FILES = ("evaluation.json", "real_eval.json")  # what the commands write


def column_name(path: Path) -> str:
    """A result's default column: its folder for a file of the default name (out/eval_x/
    evaluation.json), else the file's own stem (docs/benchmarks/real_eval_v6.json)."""
    return path.parent.name if path.name in DEFAULT_RESULT_FILES else path.stem


def compare_files(paths: list[Path], names: list[str] | None = None) -> str:
    if names is not None and len(names) != len(paths):
        raise ValueError(f"--names: {len(names)} names for {len(paths)} results")
    named = [(names[i] if names else column_name(p), load(p)) for i, p in enumerate(paths)]
    kinds = {is_real_eval(d) for _, d in named}
    if len(kinds) > 1:
        raise ValueError("results: mix `fetalflex evaluate` and `fetalflex evaluate-real` "
                         "results; compare each kind on its own")
    return real_compare_markdown(named) if kinds == {True} else compare_markdown(named)


def _g(data: dict[str, Any]) -> str:
    g = data.get("guidance")
    return "recommended by the weights" if g is None else f"{float(g):g}"
