"""Sampler cost: denoiser calls, seconds and adherence Dice per image, side by side.

Prints a table and writes ``sampler_cost.json`` + ``sampler_cost.png``; nothing here asserts
a speed. Adherence is read back by the reference segmenter (plane-restricted) and is about
the phantom world. In one process, one after the other, on the same layouts and seeds:

* plain generation: DDIM + CFG at several step counts, DPM-Solver++ and two-stage adaptive
  on the embedded ONNX Runtime backend, and what a notebook would run: the PyTorch module
  with diffusers' default 50 DDIM steps;
* counterfactual twins: our repaint at several (steps, jump length, resamples) settings on
  the same normal images, against plain DDIM on the abnormal layout (what the twin should
  read like), and diffusers' RePaint defaults (250 steps, jump 10, 10 resamples) run for
  real on ``baseline_n`` of the same twins: the loop a user would otherwise run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.repaint_baseline import DEFAULTS, diffusers_repaint
from bench.results import print_table, write_results
from fetalflex.anatomy.layout import Layout
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.presets import apply_preset, presets_for
from fetalflex.backends.backends import load_backend
from fetalflex.data.manifest import read_manifest, resolve
from fetalflex.evaluation.metrics import mean_dice
from fetalflex.evaluation.segmenter import Segmenter
from fetalflex.generation import Engine, to_float
from fetalflex.io.png import read_label_map
from fetalflex.reports.figures import new_figure, save_figure
from fetalflex.request import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    GenerationRequest,
    RepaintSettings,
)
from fetalflex.sampling.repaint import edit_region

REPAINT_SETTINGS: tuple[tuple[int, int, int], ...] = (
    (10, 5, 1), (20, 5, 1), (20, 5, 2), (20, 5, 4), (50, 10, 2))


def _layouts(manifest: Path, per_plane: int) -> list[Layout]:
    recs = read_manifest(manifest, check_files=False)
    out = []
    for code in PLANE_CODES:
        sel = [r for r in recs if r.plane == code and not r.abnormal][:per_plane]
        for r in sel:
            out.append(r.layout(read_label_map(resolve(manifest.parent, r.label_map))))
    return out


def adherence(seg: Segmenter, images: list[np.ndarray], layouts: list[Layout]) -> float:
    scores = []
    for plane in sorted({lay.plane for lay in layouts}):
        idx = [i for i, lay in enumerate(layouts) if lay.plane == plane]
        read = seg.predict(to_float(np.stack([images[i] for i in idx])), plane=plane)
        scores += [mean_dice(layouts[i].label_map, r, plane)
                   for i, r in zip(idx, read, strict=True)]
    return float(np.nanmean(scores))


def _run_set(engine: Engine, layouts: list[Layout], **req: Any) -> dict[str, Any]:
    imgs, calls, t0 = [], 0, time.perf_counter()
    for i, lay in enumerate(layouts):
        res = engine.run(GenerationRequest(plane=lay.plane, seed=100 + i, **req), layout=lay)
        imgs.append(res.samples[0].image)
        calls += res.denoiser_calls
    return {"images": imgs, "calls_per_image": calls / len(layouts),
            "seconds_per_image": (time.perf_counter() - t0) / len(layouts)}


def bench_sampler_cost(weights: Path | None, segmenter: Path, manifest: Path, out: Path,
                       per_plane: int = 2, baseline_n: int = 2, threads: int | None = None,
                       repaint_settings: tuple[tuple[int, int, int], ...] = REPAINT_SETTINGS,
                       baseline_schedule: dict[str, int] | None = None,
                       notebook_steps: int = 50) -> list[dict[str, Any]]:
    seg = Segmenter.load(segmenter)
    backend = load_backend("embedded", weights, threads=threads)
    eng = Engine(backend)
    layouts = _layouts(manifest, per_plane)
    if not layouts:
        raise ValueError(f"manifest: {manifest} has no normal items")
    rows: list[dict[str, Any]] = []

    def emit(kind: str, case: str, r: dict[str, Any], lays: list[Layout], **extra: Any) -> None:
        rows.append({"kind": kind, "case": case, "n": len(lays),
                     "calls_per_image": round(r["calls_per_image"], 1),
                     "seconds_per_image": round(r["seconds_per_image"], 3),
                     "adherence_dice": round(adherence(seg, r["images"], lays), 4), **extra})
        print(rows[-1], flush=True)

    default = f"{DEFAULT_SAMPLER}-{DEFAULT_STEPS}+cfg (default)"
    r = _run_set(eng, layouts)  # the request schema's defaults
    emit("generate", default, r, layouts)
    normal_images: list[np.ndarray] = r["images"]
    for sampler, steps in (("ddim", 5), ("ddim", 10), ("ddim", 15), ("ddim", 25),
                           ("dpmsolver++", 5), ("dpmsolver++", 6), ("dpmsolver++", 10)):
        if (sampler, steps) != (DEFAULT_SAMPLER, DEFAULT_STEPS):
            emit("generate", f"{sampler}-{steps}+cfg",
                 _run_set(eng, layouts, steps=steps, sampler=sampler), layouts)
    emit("generate", "two-stage", _run_set(eng, layouts, sampler="two-stage"), layouts)
    # What a notebook would run: the PyTorch module, diffusers' default 50 DDIM steps.
    torch_eng = Engine(load_backend("torch", weights, threads=threads))
    emit("generate", f"notebook: torch eager ddim-{notebook_steps}+cfg",
         _run_set(torch_eng, layouts, steps=notebook_steps, sampler="ddim"), layouts)

    # Twins: the same normal images (the default request) edited by one preset each.
    names = [presets_for(lay.plane)[i % len(presets_for(lay.plane))].name
             for i, lay in enumerate(layouts)]
    abn = [apply_preset(lay, n) for lay, n in zip(layouts, names, strict=True)]
    regions = [edit_region(a.label_map, b.label_map, RepaintSettings().dilate_px)
               for a, b in zip(layouts, abn, strict=True)]
    keep = [i for i, r in enumerate(regions) if r.any()]
    abn_k = [abn[i] for i in keep]
    emit("twin", f"plain {default} on the abnormal layout (reference)",
         _run_set(eng, abn_k), abn_k)
    for steps, jump, resample in repaint_settings:
        st = RepaintSettings(steps=steps, jump_length=jump, jump_n_sample=resample)
        imgs, calls, identical, t0 = [], 0, True, time.perf_counter()
        for i in keep:
            twin, c = eng.repaint(normal_images[i][None], [abn[i]], [regions[i]], [100 + i],
                                  settings=st)
            imgs.append(twin[0])
            calls += c
            identical &= bool(np.array_equal(twin[0][~regions[i]],
                                             normal_images[i][~regions[i]]))
        emit("twin", f"repaint {steps}/{jump}/{resample}",
             {"images": imgs, "calls_per_image": calls / len(keep),
              "seconds_per_image": (time.perf_counter() - t0) / len(keep)}, abn_k,
             outside_region_bit_identical=identical,
             default=(st == RepaintSettings()))

    # diffusers' RePaint defaults on the first baseline_n twins, and ours on the same ones.
    sub = keep[:baseline_n]
    if sub:
        sched = {**DEFAULTS, **(baseline_schedule or {})}
        imgs, calls, t0 = [], 0, time.perf_counter()
        for i in sub:
            twin, c = diffusers_repaint(eng, normal_images[i], abn[i], regions[i], 100 + i,
                                        **sched)
            imgs.append(twin)
            calls += c
        base: dict[str, Any] = {"images": imgs, "calls_per_image": calls / len(sub),
                "seconds_per_image": (time.perf_counter() - t0) / len(sub)}
        imgs, calls, t0 = [], 0, time.perf_counter()
        for i in sub:
            twin, c = eng.repaint(normal_images[i][None], [abn[i]], [regions[i]], [100 + i])
            imgs.append(twin[0])
            calls += c
        ours: dict[str, Any] = {"images": imgs, "calls_per_image": calls / len(sub),
                "seconds_per_image": (time.perf_counter() - t0) / len(sub)}
        sub_lays = [abn[i] for i in sub]
        label = "/".join(str(sched[k]) for k in ("num_inference_steps", "jump_length",
                                                  "jump_n_sample"))
        emit("baseline", f"diffusers RePaint {label} (same twins)", base, sub_lays)
        emit("baseline", "our repaint default (same twins)", ours, sub_lays,
             speedup_vs_diffusers=round(base["seconds_per_image"] /
                                        ours["seconds_per_image"], 1))
    print_table(rows)
    write_results(out, "sampler_cost", rows, {"image_size": backend.config.image_size,
                                              "layouts": len(layouts), "model_id":
                                              backend.model_id})
    _plot(rows, out / "sampler_cost.png")
    return rows


MARKERS = {"generate": "o", "twin": "s", "baseline": "^"}
BASELINE_NOTE = "* = the subset of twins shared with the diffusers baseline"


def _case_label(case: str) -> str:
    return case.replace(" (same twins)", "*").replace(
        " on the abnormal layout (reference)", " (abnormal layout)")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    save_figure(cost_figure(rows), path, "sampler cost vs adherence; phantom world")


def cost_figure(rows: list[dict[str, Any]]) -> Any:
    """Adherence against denoiser calls, one panel for plain generation and one for twins.
    Points are named in a legend under each panel (labels beside points collided), and the
    log x axis is ticked with plain numbers (no overlapping minor labels)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, StrMethodFormatter

    fig, axes = new_figure(ncols=2, width=5.6, height=5.4)
    fig.set_layout_engine("constrained")
    panels = ((axes[0][0], ("generate",), "Plain generation"),
              (axes[0][1], ("twin", "baseline"), "Counterfactual twins"))
    for ax, kinds, title in panels:
        mine = [r for r in rows if r["kind"] in kinds]
        for r in mine:
            ax.scatter(r["calls_per_image"], r["adherence_dice"], marker=MARKERS[r["kind"]],
                       s=36, label=f"{_case_label(r['case'])} ({r['calls_per_image']:g})")
        ax.set_xscale("log")
        calls = sorted({float(r["calls_per_image"]) for r in mine})
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
                 if calls and calls[0] / 1.5 <= t <= calls[-1] * 1.5]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if calls:
            ax.set_xlim(calls[0] / 1.4, calls[-1] * 1.4)
        ax.margins(y=0.12)
        ax.grid(alpha=0.3)
        ax.set_xlabel("denoiser calls per image (log)")
        ax.set_ylabel("adherence Dice (reference segmenter)")
        ax.set_title(title)
        legend_title = "case (calls per image)"
        if any(r["kind"] == "baseline" for r in mine):
            legend_title += "\n" + BASELINE_NOTE
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False, title=legend_title, title_fontsize=7)
    return fig


def plot_from_json(results: Path, png: Path) -> Path:
    """Re-plot a written ``sampler_cost*.json`` without rerunning the benchmark."""
    import json

    _plot(json.loads(results.read_text())["rows"], png)
    return png
