"""``fetalflex evaluate``: what the generator draws, measured per plane (phantom world only).

For each plane, on held-out phantoms of the evaluation manifest (never training data):

* **segmenter ceiling**: the reference segmenter's mean Dice on the phantoms themselves.
  Generated images cannot be read back better than real ones.
* **adherence**: the segmenter's mean Dice on images generated from the same label maps,
  and adherence / ceiling.
* **per-structure brightness**: Spearman rank correlation between the mean grey level of
  each structure in the generated image and in the phantom of the same layout. Beside it:
  the *ceiling*, a second phantom of the same layout (other speckle seed) vs the first, and
  the *floor*, a phantom of another layout of the plane read through this layout's map
  (what an image that ignores its layout scores).
* **texture**: tissue / fluid means, speckle SNR, tissue-histogram distance.
* all of the above **against sampler steps** (default 5, 10, 25, 50, 100): a model that
  gets worse with more steps has a defect that a short schedule only hides.
* **anomaly twins**: per preset of the plane, the normal layouts are edited by the preset;
  the simulator renders normal and edited phantoms with one seed, the generator makes the
  normal image and repaints its twin. The mean grey-level change of the edited pixels is
  compared: same sign as the simulator's, and its size relative to the simulator's.

Generation goes through :class:`~fetalflex.generation.Engine` with one seed per layout, so
results do not depend on the batch size. Writes ``evaluation.json``, ``evaluation.md`` and
figures (``sample_grid.png``, ``steps.png``, ``twins.png``) to ``out``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import stats

from fetalflex.anatomy.layout import Layout
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.presets import apply_preset, presets_for
from fetalflex.anatomy.structures import BACKGROUND
from fetalflex.backends.backends import Backend
from fetalflex.data.manifest import Record, read_manifest, resolve
from fetalflex.evaluation.metrics import histogram_distance, mean_dice, texture_stats
from fetalflex.evaluation.options import EvalOptions
from fetalflex.evaluation.segmenter import Segmenter
from fetalflex.generation import Engine
from fetalflex.io import pixels
from fetalflex.io.png import read_gray, read_label_map
from fetalflex.phantom.simulator import simulate_bmode
from fetalflex.request import GenerationRequest, RepaintSettings, SamplerName
from fetalflex.sampling.repaint import edit_region

MIN_STRUCTURE_PX = 12  # structures smaller than this are left out of brightness vectors
MIN_CHANGED_PX = 4  # an edit that changes fewer pixels (none: preset not applicable) is skipped
SECOND_PHANTOM_SEED = 7_777  # the ceiling's second phantom of a layout uses seed + this


def _shown(path: Path) -> str:
    """A path as results record it: relative to the working directory when inside it (a
    result committed from one machine must not name that machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def structure_brightness(image: NDArray[np.uint8], label_map: NDArray[np.uint8]
                         ) -> dict[int, float]:
    """Mean grey level per structure present (background and tiny structures left out)."""
    out: dict[int, float] = {}
    for lid in np.unique(label_map):
        if int(lid) == BACKGROUND:
            continue
        m = label_map == lid
        if int(m.sum()) >= MIN_STRUCTURE_PX:
            out[int(lid)] = float(image[m].mean())
    return out


def brightness_correlation(image: NDArray[np.uint8], reference: NDArray[np.uint8],
                           label_map: NDArray[np.uint8]) -> float:
    """Spearman correlation of per-structure brightness, both read through ``label_map``."""
    a = structure_brightness(image, label_map)
    b = structure_brightness(reference, label_map)
    keys = sorted(a)
    if len(keys) < 3:
        return float("nan")
    rho = stats.spearmanr([a[k] for k in keys], [b[k] for k in keys]).statistic
    return float(rho) if np.isfinite(rho) else float("nan")


def _layouts(recs: list[Record], root: Path) -> tuple[list[Layout], NDArray[np.uint8]]:
    layouts = [r.layout(read_label_map(resolve(root, r.label_map))) for r in recs]
    images = np.stack([read_gray(resolve(root, r.image)) for r in recs])
    return layouts, images


def _seeds(base: int, plane: str, n: int) -> list[int]:
    return [base + 1000 * PLANE_CODES.index(plane) + i for i in range(n)]


def _nanmean(x: Sequence[float]) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _quality(engine: Engine, seg: Segmenter, layouts: list[Layout], phantoms: np.ndarray,
             seeds: list[int], steps: int, guidance: float, sampler: SamplerName,
             appearance: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    plane = layouts[0].plane
    maps = np.stack([x.label_map for x in layouts])
    gen, calls = engine.sample_layouts(layouts, seeds, steps=steps, guidance=guidance,
                                       sampler=sampler, appearance=appearance)
    read = seg.predict(_to_t(gen), plane=plane)
    adher = [mean_dice(m, r, plane) for m, r in zip(maps, read, strict=True)]
    corr = [brightness_correlation(g, p, m) for g, p, m in zip(gen, phantoms, maps, strict=True)]
    tex_g, tex_r = texture_stats(gen, maps), texture_stats(phantoms, maps)
    return {
        "steps": steps,
        "adherence_dice": _nanmean(adher),
        "brightness_rank_corr": _nanmean(corr),
        "texture_generated": {k: v for k, v in tex_g.items() if not k.startswith("_")},
        "tissue_histogram_w1": histogram_distance(tex_g["_hist"], tex_r["_hist"]),
        "denoiser_calls": calls,
    }, gen, read


def _to_t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels.to_unit(a))[:, None]


def twin_signs(engine: Engine, layouts: list[Layout], seeds: list[int], generated: np.ndarray,
               guidance: float, k: int, appearance: str | None = None,
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per preset: grey-level change of the edited pixels, simulator vs generator.

    ``generated`` are the images already made from ``layouts`` with ``seeds`` (generation is
    per-seed, so the first ``k`` are what generating those ``k`` alone would give); each
    normal phantom is rendered once and serves every preset of the plane."""
    out: dict[str, Any] = {}
    examples: list[dict[str, Any]] = []
    base = layouts[:k]
    sd = seeds[:k]
    gen_normal = generated[:k]
    phantom_normal: dict[int, np.ndarray] = {}
    settings = RepaintSettings()
    for pr in presets_for(base[0].plane):
        edited = [apply_preset(x, pr.name) for x in base]
        changed = [a.label_map != b.label_map for a, b in zip(base, edited, strict=True)]
        keep = [i for i, c in enumerate(changed) if c.sum() >= MIN_CHANGED_PX]
        if not keep:
            out[pr.name] = {"n": 0}
            continue
        regions = [edit_region(base[i].label_map, edited[i].label_map, settings.dilate_px)
                   for i in keep]
        twins, _ = engine.repaint(gen_normal[keep], [edited[i] for i in keep], regions,
                                  [sd[i] for i in keep], guidance=guidance, settings=settings,
                                  appearance=appearance)
        d_sim, d_gen = [], []
        for j, i in enumerate(keep):
            m = changed[i]
            if i not in phantom_normal:
                phantom_normal[i] = simulate_bmode(base[i].label_map, sd[i]).astype(np.float64)
            p0 = phantom_normal[i]
            p1 = simulate_bmode(edited[i].label_map, sd[i]).astype(np.float64)
            d_sim.append(float(p1[m].mean() - p0[m].mean()))
            d_gen.append(float(twins[j].astype(np.float64)[m].mean()
                               - gen_normal[i].astype(np.float64)[m].mean()))
            if j == 0:
                examples.append({"preset": f"{base[0].plane} {pr.name}",
                                 "normal": gen_normal[i], "twin": twins[j],
                                 "phantom_normal": p0.astype(np.uint8),
                                 "phantom_abnormal": p1.astype(np.uint8), "changed": m,
                                 "d_sim": d_sim[-1], "d_gen": d_gen[-1]})
        ms, mg = float(np.mean(d_sim)), float(np.mean(d_gen))
        out[pr.name] = {"n": len(keep), "delta_simulator": ms, "delta_generated": mg,
                        "sign_ok": bool(np.sign(ms) == np.sign(mg)),
                        "size_ratio": mg / ms if abs(ms) > 1e-6 else float("nan")}
    return out, examples


def evaluate(backend: Backend, segmenter_dir: Path, manifest: Path, out: Path,
             opts: EvalOptions | None = None) -> dict[str, Any]:
    from fetalflex.reports.evaluation_figures import sample_grid, steps_figure, twins_figure

    opts = opts or EvalOptions()
    engine = Engine(backend)
    # unset: what a request in this look gets from these weights (else the schema's default)
    guidance = (opts.guidance if opts.guidance is not None else engine.resolve(
        GenerationRequest(plane=opts.planes[0], appearance=opts.appearance)).guidance)
    sampler = opts.sampler
    t0 = time.perf_counter()
    seg = Segmenter.load(segmenter_dir)
    recs = read_manifest(manifest, check_files=False)
    root = manifest.parent
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "model_id": backend.model_id, "model_hash": backend.model_hash,
        "precision": backend.precision,
        "backend": backend.name, "image_size": engine.cfg.image_size,
        "segmenter": _shown(segmenter_dir), "data": _shown(manifest), "guidance": guidance,
        "sampler": sampler, "appearance": opts.appearance,
        "guidance_below_t": engine.cfg.sampling.guidance_below_t,
        **engine.cfg.sampling.contrast_record(opts.appearance),
        "steps": list(opts.steps), "default_steps": opts.default_steps,
        "n_per_plane": opts.n_per_plane, "planes": {},
    }
    grid_rows: list[dict[str, Any]] = []
    twin_examples: list[dict[str, Any]] = []
    total_calls = 0
    for plane in opts.planes:
        normal = [r for r in recs if r.plane == plane and not r.abnormal][:opts.n_per_plane]
        abnormal = [r for r in recs if r.plane == plane and r.abnormal][:opts.n_per_plane]
        if len(normal) < 2:
            continue
        layouts, phantoms = _layouts(normal, root)
        maps = np.stack([x.label_map for x in layouts])
        seeds = _seeds(opts.seed, plane, len(layouts))
        read_real = seg.predict(_to_t(phantoms), plane=plane)
        ceiling = _nanmean([mean_dice(m, r, plane)
                            for m, r in zip(maps, read_real, strict=True)])
        second = np.stack([simulate_bmode(m, int(r.seed or 0) + SECOND_PHANTOM_SEED)
                           for m, r in zip(maps, normal, strict=True)])
        bc_ceiling = _nanmean([brightness_correlation(s, p, m)
                               for s, p, m in zip(second, phantoms, maps, strict=True)])
        other = np.roll(phantoms, 1, axis=0)  # a phantom of another layout of the plane
        bc_floor = _nanmean([brightness_correlation(o, p, m)
                             for o, p, m in zip(other, phantoms, maps, strict=True)])
        tex_r = texture_stats(phantoms, maps)
        row: dict[str, Any] = {
            "n": len(layouts), "segmenter_ceiling": ceiling,
            "brightness_corr_ceiling": bc_ceiling, "brightness_corr_floor": bc_floor,
            "texture_phantom": {k: v for k, v in tex_r.items() if not k.startswith("_")},
            "by_steps": [],
        }
        generated: np.ndarray | None = None  # the images at default_steps (always run)
        for steps in opts.steps:
            q, gen, read = _quality(engine, seg, layouts, phantoms, seeds, steps, guidance,
                                    sampler, opts.appearance)
            q["adherence_over_ceiling"] = q["adherence_dice"] / ceiling if ceiling else None
            row["by_steps"].append(q)
            total_calls += q["denoiser_calls"]
            if steps == opts.default_steps:
                generated = gen
                grid_rows.append({"plane": plane, "layout": maps[0], "generated": gen[0],
                                  "phantom": phantoms[0], "read": read[0]})
        if abnormal:
            alay, aph = _layouts(abnormal, root)
            q, _, _ = _quality(engine, seg, alay, aph, _seeds(opts.seed + 500, plane, len(alay)),
                               opts.default_steps, guidance, sampler, opts.appearance)
            q["presets"] = sorted({r.preset for r in abnormal if r.preset})
            row["abnormal_layouts"] = q
            total_calls += q["denoiser_calls"]
        if opts.twins_per_preset and generated is not None:
            row["twins"], ex = twin_signs(engine, layouts, seeds, generated, guidance,
                                          opts.twins_per_preset, appearance=opts.appearance)
            twin_examples += ex
        results["planes"][plane] = row
    results["summary"] = summarize(results)
    results["summary"]["denoiser_calls"] = total_calls
    results["summary"]["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "evaluation.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "evaluation.md").write_text(markdown(results))
    if grid_rows:
        sample_grid(grid_rows, out / "sample_grid.png", results)
    steps_figure(results, out / "steps.png")
    if twin_examples:
        twins_figure(twin_examples, out / "twins.png")
    return results


def _at(row: dict[str, Any], steps: int) -> dict[str, Any] | None:
    return next((q for q in row["by_steps"] if q["steps"] == steps), None)


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's target rows, from the per-plane results."""
    planes = res["planes"]
    d = res["default_steps"]
    ceil = {p: r["segmenter_ceiling"] for p, r in planes.items()}
    ratio = {p: (_at(r, d) or {}).get("adherence_over_ceiling") for p, r in planes.items()}
    bc_gap = {p: r["brightness_corr_ceiling"] - (_at(r, d) or {}).get(
        "brightness_rank_corr", float("nan")) for p, r in planes.items()}
    by_steps = {}
    for s in res["steps"]:
        rows = [q for q in (_at(r, s) for r in planes.values()) if q]
        by_steps[str(s)] = {
            "adherence_dice": _nanmean([q["adherence_dice"] for q in rows]),
            "brightness_rank_corr": _nanmean([q["brightness_rank_corr"] for q in rows]),
            "fluid_mean": _nanmean([q["texture_generated"]["fluid_mean"] for q in rows]),
            "tissue_mean": _nanmean([q["texture_generated"]["tissue_mean"] for q in rows]),
        }
    twins = {f"{plane}:{name}": t for plane, r in planes.items()
             for name, t in r.get("twins", {}).items() if t.get("n")}
    return {
        "segmenter_ceiling_mean": _nanmean(list(ceil.values())),
        "segmenter_ceiling_worst": min(ceil.values()) if ceil else float("nan"),
        "adherence_over_ceiling": ratio,
        "adherence_over_ceiling_worst": min((v for v in ratio.values() if v is not None),
                                            default=float("nan")),
        "brightness_corr_gap_to_ceiling": bc_gap,
        "brightness_corr_gap_worst": max(bc_gap.values()) if bc_gap else float("nan"),
        "by_steps": by_steps,
        "twins_sign_ok": sum(1 for t in twins.values() if t["sign_ok"]),
        "twins_half_size": sum(1 for t in twins.values()
                               if t["sign_ok"] and t["size_ratio"] >= 0.5),
        "twins_total": len(twins),
    }


def _f(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, fmt)


def markdown(res: dict[str, Any]) -> str:
    d = res["default_steps"]
    s = res["summary"]
    lines = [
        f"Evaluation (phantom world only): {res['model_id']} ({res['model_hash'][:12]}), "
        f"{res['image_size']}x{res['image_size']}, {res.get('sampler', 'ddim')}, "
        f"guidance {res['guidance']}, {res['appearance']} appearance, "
        f"{res['n_per_plane']} held-out layouts per plane; backend {res['backend']}.",
        "",
        f"### Per plane at {d} steps",
        "",
        "| plane | segmenter ceiling | adherence | adherence / ceiling | brightness corr "
        "(floor / generated / ceiling) | tissue gen/phantom | fluid gen/phantom | speckle SNR "
        "gen/phantom | tissue hist W1 | abnormal-layout adherence |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for plane, row in res["planes"].items():
        q = _at(row, d)
        if q is None:
            continue
        tg, tr = q["texture_generated"], row["texture_phantom"]
        ab = row.get("abnormal_layouts")
        lines.append(
            f"| {plane} | {_f(row['segmenter_ceiling'])} | {_f(q['adherence_dice'])} | "
            f"{_f(q['adherence_over_ceiling'], '.2f')} | {_f(row['brightness_corr_floor'])} / "
            f"**{_f(q['brightness_rank_corr'])}** / {_f(row['brightness_corr_ceiling'])} | "
            f"{_f(tg['tissue_mean'], '.0f')}/{_f(tr['tissue_mean'], '.0f')} | "
            f"{_f(tg['fluid_mean'], '.0f')}/{_f(tr['fluid_mean'], '.0f')} | "
            f"{_f(tg['speckle_snr'], '.2f')}/{_f(tr['speckle_snr'], '.2f')} | "
            f"{_f(q['tissue_histogram_w1'], '.1f')} | {_f(ab['adherence_dice']) if ab else '-'} |")
    lines += ["", "### Against sampler steps (mean over planes)", "",
              "| steps | adherence | brightness corr | tissue mean | fluid mean |",
              "| --- | --- | --- | --- | --- |"]
    for st, v in s["by_steps"].items():
        lines.append(f"| {st} | {_f(v['adherence_dice'])} | {_f(v['brightness_rank_corr'])} | "
                     f"{_f(v['tissue_mean'], '.1f')} | {_f(v['fluid_mean'], '.1f')} |")
    lines += ["", f"### Anomaly twins ({d} steps + repaint): grey-level change of the edited "
                  "pixels", "",
              "| plane | preset | n | simulator | generated | same sign | size ratio |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for plane, row in res["planes"].items():
        for name, t in row.get("twins", {}).items():
            if not t.get("n"):
                continue
            lines.append(f"| {plane} | {name} | {t['n']} | {t['delta_simulator']:+.1f} | "
                         f"{t['delta_generated']:+.1f} | {'yes' if t['sign_ok'] else 'NO'} | "
                         f"{_f(t['size_ratio'], '.2f')} |")
    lines += ["", "### Summary", "",
              f"- segmenter ceiling: mean {_f(s['segmenter_ceiling_mean'])}, worst plane "
              f"{_f(s['segmenter_ceiling_worst'])}",
              f"- adherence / ceiling, worst plane: {_f(s['adherence_over_ceiling_worst'], '.2f')}",
              f"- brightness correlation, worst gap to the phantom ceiling: "
              f"{_f(s['brightness_corr_gap_worst'])}",
              f"- twins with the simulator's sign: {s['twins_sign_ok']}/{s['twins_total']}; "
              f"with the sign and >= half its size: {s['twins_half_size']}/{s['twins_total']}",
              ""]
    return "\n".join(lines)
