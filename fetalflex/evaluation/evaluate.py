"""``fetalflex evaluate``: anatomy adherence and texture of generated images, per plane.

For each plane, layouts are taken from an evaluation manifest (phantom data not used in
training). Reported:

* ``segmenter_dice_on_phantoms``: the reference segmenter reading real phantom images
  (the ceiling of adherence);
* ``adherence_dice``: Dice between the requested layout and the segmenter's reading of
  the generated image, mean over the plane's fetal structures;
* the same for abnormal layouts (anomaly presets the denoiser never saw);
* texture: tissue and fluid intensity, speckle SNR, and the Wasserstein distance between
  generated and phantom tissue-intensity histograms.

All of it is about the phantom world.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fetalflex.anatomy.layout import one_hot
from fetalflex.anatomy.planes import PLANE_CODES, plane_index
from fetalflex.anatomy.render import colourize
from fetalflex.data.manifest import Record, read_manifest, resolve
from fetalflex.evaluation.metrics import histogram_distance, mean_dice, texture_stats
from fetalflex.evaluation.segmenter import Segmenter
from fetalflex.generation import to_uint8
from fetalflex.io.png import read_gray, read_label_map, write_image
from fetalflex.model.denoiser import FetalFlexDenoiser, guidance_conditions
from fetalflex.sampling.ddim import ddim_scheduler, sample_ddim
from fetalflex.sampling.denoisers import CountingCall, ModelCall, guided, torch_model_call


def generate_for_layouts(call: ModelCall, model_cfg: Any, maps: np.ndarray, plane: str,
                         ga: list[float | None], seed: int, steps: int, guidance: float,
                         batch: int = 16) -> tuple[np.ndarray, int]:
    """DDIM + CFG for a stack of label maps; returns uint8 images and denoiser calls."""
    sched = ddim_scheduler(model_cfg)
    outs = []
    calls = 0
    for s in range(0, len(maps), batch):
        m = maps[s:s + batch]
        n = len(m)
        layout = torch.from_numpy(np.stack([one_hot(x) for x in m]))
        cond, uncond = guidance_conditions(plane_index(plane), ga[s:s + batch],
                                           model_cfg.num_planes)
        gen = torch.Generator().manual_seed(seed + s)
        x = torch.randn((n, 1, m.shape[1], m.shape[2]), generator=gen)
        counted = CountingCall(call)
        out = sample_ddim(guided(counted, layout, cond, uncond, guidance), x, sched, steps)
        calls += counted.calls
        outs.append(to_uint8(out))
    return np.concatenate(outs), calls


def _pick(recs: list[Record], plane: str, abnormal: bool, n: int) -> list[Record]:
    return [r for r in recs if r.plane == plane and r.abnormal == abnormal][:n]


def evaluate(model_dir: Path, segmenter_dir: Path, manifest: Path, out: Path,
             n_per_plane: int = 8, steps: int = 25, guidance: float = 2.0, seed: int = 0,
             planes: tuple[str, ...] = PLANE_CODES) -> dict[str, Any]:
    t0 = time.perf_counter()
    model = FetalFlexDenoiser.load(model_dir)
    call = torch_model_call(model)
    seg = Segmenter.load(segmenter_dir)
    recs = read_manifest(manifest, check_files=False)
    root = manifest.parent
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"model": str(model_dir), "segmenter": str(segmenter_dir),
                               "data": str(manifest), "steps": steps, "guidance": guidance,
                               "n_per_plane": n_per_plane, "planes": {}}
    grid_rows = []
    total_calls = 0
    for plane in planes:
        row: dict[str, Any] = {}
        for abnormal in (False, True):
            sel = _pick(recs, plane, abnormal, n_per_plane)
            if not sel:
                continue
            real = np.stack([read_gray(resolve(root, r.image)) for r in sel])
            maps = np.stack([read_label_map(resolve(root, r.label_map)) for r in sel])
            gen, calls = generate_for_layouts(call, model.config, maps, plane,
                                              [r.ga_weeks for r in sel], seed, steps, guidance)
            total_calls += calls
            to_t = lambda a: torch.from_numpy(a.astype(np.float32) / 127.5 - 1)[:, None]  # noqa: E731
            read_real = seg.predict(to_t(real), plane=plane)
            read_gen = seg.predict(to_t(gen), plane=plane)
            key = "abnormal" if abnormal else "normal"
            ceiling = [mean_dice(m, r, plane) for m, r in zip(maps, read_real, strict=True)]
            adher = [mean_dice(m, r, plane) for m, r in zip(maps, read_gen, strict=True)]
            tex_g, tex_r = texture_stats(gen, maps), texture_stats(real, maps)
            row[key] = {
                "n": len(sel),
                "presets": sorted({r.preset for r in sel if r.preset}),
                "segmenter_dice_on_phantoms": float(np.nanmean(ceiling)),
                "adherence_dice": float(np.nanmean(adher)),
                "texture_generated": {k: v for k, v in tex_g.items() if not k.startswith("_")},
                "texture_phantom": {k: v for k, v in tex_r.items() if not k.startswith("_")},
                "tissue_histogram_w1": histogram_distance(tex_g["_hist"], tex_r["_hist"]),
                "denoiser_calls": calls,
            }
            if not abnormal:
                grid_rows.append(np.concatenate([
                    np.concatenate([colourize(maps[i]), _rgb(gen[i]), _rgb(real[i]),
                                    colourize(read_gen[i])], axis=1)
                    for i in (0, 1 % len(sel))], axis=1))
        results["planes"][plane] = row
    normal = [v["normal"] for v in results["planes"].values() if "normal" in v]
    abn = [v["abnormal"] for v in results["planes"].values() if "abnormal" in v]
    results["summary"] = {
        "adherence_dice_mean": float(np.mean([v["adherence_dice"] for v in normal])),
        "segmenter_ceiling_mean": float(np.mean([v["segmenter_dice_on_phantoms"]
                                                 for v in normal])),
        "abnormal_adherence_dice_mean": float(np.mean([v["adherence_dice"] for v in abn]))
        if abn else None,
        "denoiser_calls": total_calls,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "evaluation.md").write_text(markdown_table(results))
    if grid_rows:
        grid = np.concatenate(grid_rows, axis=0)
        scale = max(1, 256 // grid_rows[0].shape[0])
        from PIL import Image

        big = np.asarray(Image.fromarray(grid).resize(
            (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST))
        write_image(out / "sample_grid.png", big,
                    {"Content": "per plane x2: requested layout | generated | phantom of the "
                                "same layout | segmenter reading of the generated image"})
    return results


def _rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def markdown_table(res: dict[str, Any]) -> str:
    lines = [
        f"Evaluation (phantom world only): DDIM-{res['steps']}, guidance {res['guidance']}, "
        f"{res['n_per_plane']} layouts per plane and kind.",
        "",
        "| plane | segmenter Dice on phantoms (ceiling) | adherence Dice (normal) | "
        "adherence Dice (abnormal presets) | tissue mean gen/phantom | fluid mean gen/phantom "
        "| speckle SNR gen/phantom | tissue hist W1 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for plane, row in res["planes"].items():
        n = row.get("normal")
        a = row.get("abnormal")
        if not n:
            continue
        tg, tr = n["texture_generated"], n["texture_phantom"]
        lines.append(
            f"| {plane} | {n['segmenter_dice_on_phantoms']:.3f} | {n['adherence_dice']:.3f} | "
            f"{a['adherence_dice']:.3f} ({', '.join(a['presets'])}) | " if a else
            f"| {plane} | {n['segmenter_dice_on_phantoms']:.3f} | {n['adherence_dice']:.3f} | - | "
        )
        lines[-1] += (f"{tg['tissue_mean']:.0f}/{tr['tissue_mean']:.0f} | "
                      f"{tg['fluid_mean']:.0f}/{tr['fluid_mean']:.0f} | "
                      f"{tg['speckle_snr']:.2f}/{tr['speckle_snr']:.2f} | "
                      f"{n['tissue_histogram_w1']:.1f} |")
    s = res["summary"]
    lines += ["", f"Mean adherence Dice (normal): **{s['adherence_dice_mean']:.3f}** "
                  f"(segmenter ceiling {s['segmenter_ceiling_mean']:.3f}); abnormal: "
                  f"{s['abnormal_adherence_dice_mean']}", ""]
    return "\n".join(lines)
