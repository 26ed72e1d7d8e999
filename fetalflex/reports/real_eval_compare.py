"""Side by side: several ``fetalflex evaluate-real`` results (a teacher and its student, two
generation seeds of one model, two samplings), one Markdown table.

Rows: the plane reader's generated / real ratio per plane; per plane group the
reader-feature Frechet distance, the FRD and the grey-level W1, each over its real-vs-real
floor, and the mean grey gap (generated - real); the head outline's Dice and HC error ratio;
copying; the anomaly twins right-signed; denoiser rows per image. Two results of one model
under two generation seeds give the seed-to-seed spread a third one is read against.
"""

from __future__ import annotations

from typing import Any

from fetalflex.request import denoiser_rows


def is_real_eval(data: dict[str, Any]) -> bool:
    return all(k in data for k in ("world", "groups", "head", "planes", "copying"))


def rows_per_image(data: dict[str, Any]) -> str:
    s = data.get("sampling")
    if not s:
        return "?"
    if s["sampler"] == "two-stage":
        return f"adaptive (two-stage, guidance {s['guidance']:g})"
    n = denoiser_rows(int(s["steps"]), float(s["guidance"]), s.get("guidance_below_t"))
    prec = f", {s['precision']}" if s.get("precision", "fp32") != "fp32" else ""
    if s.get("plane_contrast"):
        n_c = denoiser_rows(int(s["steps"]), float(s["guidance"]), s.get("guidance_below_t"),
                            contrast=True)
        weights = ", ".join(f"{p} {w:g}" for p, w in s["plane_contrast"].items())
        prec += f", plane contrast {weights}: {n_c} rows for those planes"
    return f"{n} ({s['sampler']} {s['steps']}, guidance {s['guidance']:g}{prec})"


def _f(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{float(v):.{nd}f}"


def real_compare_markdown(named: list[tuple[str, dict[str, Any]]]) -> str:
    names = [n for n, _ in named]
    data = [d for _, d in named]
    lines = ["| figure | target | " + " | ".join(names) + " |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " |"]

    def row(label: str, target: str, cells: list[str]) -> None:
        lines.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    for p in [p for p in data[0]["planes"] if all(p in d["planes"] for d in data)]:
        row(f"reader gen / real, {p}", ">= 0.9",
            [_f(d["planes"][p]["ratio"]) for d in data])
    for g in [g for g in data[0]["groups"] if all(g in d["groups"] for d in data)]:
        row(f"feature FD / floor, {g}", "<= 2", [_f(d["groups"][g]["fd_ratio"]) for d in data])
        row(f"FRD / floor, {g}", "<= 2",
            [_f(d["frd"][g]["frd_ratio"]) if isinstance(d.get("frd"), dict) and g in d["frd"]
             else "-" for d in data])
        row(f"grey W1 / floor, {g}", "-", [_f(d["groups"][g]["w1_ratio"], 1) for d in data])
        row(f"mean grey gen - real, {g}", "~0",
            [f"{d['groups'][g]['mean_grey_generated'] - d['groups'][g]['mean_grey_real']:+.1f}"
             for d in data])
    row("head outline: Dice", ">= 0.95", [_f(d["head"]["generated"]["dice"], 3) for d in data])
    row("head outline: HC error gen / own", "<= 1.5",
        [_f(d["head"].get("hc_error_ratio")) for d in data])
    row("nearest-training correlation (real val: "
        f"{data[0]['copying']['real_val_mean']:.3f})", "not higher",
        [_f(d["copying"]["generated_mean"], 3) for d in data])
    row("twins right-signed", "every preset",
        [f"{sum(bool(t['sign_ok']) for t in d['twins'].values())}/{len(d['twins'])}"
         if d.get("twins") else "not run" for d in data])
    row("denoiser rows per image", "-", [rows_per_image(d) for d in data])
    return "\n".join(lines) + "\n"
