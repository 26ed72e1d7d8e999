"""Sampling benchmark: denoiser calls, seconds and adherence per image, side by side.

Prints figures (JSON lines); nothing here asserts a speed. Adherence uses the reference
segmenter and is about the phantom world. Measured in one process, one after the other,
on the same layouts and seeds:

* fixed DDIM + CFG at several step counts (the quality/cost curve), and two-stage adaptive;
* counterfactual pairs (DDIM normal + repaint twin) against plain DDIM on the abnormal
  layout, and the call count of diffusers' RePaint defaults (250 steps, jump 10, 10
  resamples) as the cost baseline;
* the same DDIM loop on the embedded ONNX Runtime backend and on PyTorch eager;
* 8 concurrent requests through the micro-batcher against the same 8 one at a time.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fetalflex.anatomy.layout import Layout
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.presets import presets_for
from fetalflex.backends.backends import Backend, load_backend
from fetalflex.backends.batching import MicroBatcher
from fetalflex.data.manifest import read_manifest, resolve
from fetalflex.evaluation.metrics import mean_dice
from fetalflex.evaluation.segmenter import Segmenter
from fetalflex.generation import Engine, GenerationRequest, to_float
from fetalflex.io.png import read_label_map
from fetalflex.sampling.schedules import count_calls, repaint_transitions, trailing_timesteps


def _layouts(manifest: Path, per_plane: int) -> list[Layout]:
    recs = read_manifest(manifest, check_files=False)
    out = []
    for code in PLANE_CODES:
        sel = [r for r in recs if r.plane == code and not r.abnormal][:per_plane]
        for r in sel:
            out.append(Layout(code, read_label_map(resolve(manifest.parent, r.label_map)),
                              r.field_mm or 100.0, r.ga_weeks))
    return out


def _adherence(seg: Segmenter, images: list[np.ndarray], layouts: list[Layout]) -> float:
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


def bench_sampling(weights: Path | None, segmenter: Path, manifest: Path,
                   per_plane: int = 2, threads: int | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seg = Segmenter.load(segmenter)
    onnx = load_backend("embedded", weights, threads=threads)
    eng = Engine(onnx)
    layouts = _layouts(manifest, per_plane)
    size = onnx.config.image_size

    def emit(name: str, r: dict[str, Any], lays: list[Layout], **extra: Any) -> None:
        row = {"case": name, "image_size": size, "n": len(lays),
               "calls_per_image": round(r["calls_per_image"], 1),
               "seconds_per_image": round(r["seconds_per_image"], 3),
               "adherence_dice": round(_adherence(seg, r["images"], lays), 4), **extra}
        rows.append(row)
        print(row, flush=True)

    for steps in (5, 10, 15, 25):
        emit(f"ddim-{steps}+cfg", _run_set(eng, layouts, steps=steps), layouts)
    emit("two-stage", _run_set(eng, layouts, sampler="two-stage"), layouts)
    emit("dpmsolver++-10+cfg", _run_set(eng, layouts, steps=10, sampler="dpmsolver++"),
         layouts)

    # Pairs: normal + repaint twin vs plain DDIM-25 on the abnormal layout.
    pair_imgs, pair_lays, plain_imgs, calls, seam = [], [], [], 0, []
    t0 = time.perf_counter()
    from fetalflex.anatomy.presets import apply_preset

    for i, lay in enumerate(layouts):
        pr = presets_for(lay.plane)[i % len(presets_for(lay.plane))].name
        res = eng.run(GenerationRequest(plane=lay.plane, seed=100 + i, preset=pr, pair=True),
                      layout=lay)
        s = res.samples[0]
        assert s.abnormal_image is not None and s.abnormal_layout is not None
        pair_imgs.append(s.abnormal_image)
        pair_lays.append(s.abnormal_layout)
        calls += res.denoiser_calls
        seam.append(bool(np.array_equal(s.abnormal_image[~s.region], s.image[~s.region])))
    t_pair = (time.perf_counter() - t0) / len(layouts)
    ab_lays = [apply_preset(lay, presets_for(lay.plane)[i % len(presets_for(lay.plane))].name)
               for i, lay in enumerate(layouts)]
    default_steps = GenerationRequest.model_fields["steps"].default
    plain = _run_set(eng, ab_lays, steps=default_steps)
    plain_imgs = plain["images"]
    rows.append({"case": f"pair (ddim-{default_steps} + repaint 20/5/2)",
                 "calls_per_pair": calls / len(layouts),
                 "seconds_per_pair": round(t_pair, 3),
                 "twin_adherence_dice": round(_adherence(seg, pair_imgs, pair_lays), 4),
                 "plain_sampler_on_abnormal_layout_dice": round(
                     _adherence(seg, plain_imgs, ab_lays), 4),
                 "outside_region_bit_identical": all(seam),
                 "baseline_repaint_defaults_calls": count_calls(
                     repaint_transitions(trailing_timesteps(1000, 250), 10, 10))})
    print(rows[-1], flush=True)

    # Embedded ONNX Runtime vs PyTorch eager, same loop, same layouts.
    tch = load_backend("torch", weights, threads=threads)
    sub = layouts[: max(3, len(layouts) // 2)]
    r_onnx = _run_set(Engine(onnx), sub, steps=25)
    r_torch = _run_set(Engine(tch), sub, steps=25)
    rows.append({"case": "ddim-25 embedded vs torch",
                 "onnx_seconds_per_image": round(r_onnx["seconds_per_image"], 3),
                 "torch_seconds_per_image": round(r_torch["seconds_per_image"], 3),
                 "speedup_onnx_over_torch": round(r_torch["seconds_per_image"] /
                                                  r_onnx["seconds_per_image"], 2)})
    print(rows[-1], flush=True)
    rows.append(_bench_batching(onnx, layouts))
    print(rows[-1], flush=True)
    return rows


def _bench_batching(backend: Backend, layouts: list[Layout], concurrency: int = 8
                    ) -> dict[str, Any]:
    lays = [layouts[i % len(layouts)] for i in range(concurrency)]
    reqs = [GenerationRequest(plane=lay.plane, seed=500 + i, steps=25)
            for i, lay in enumerate(lays)]
    eng = Engine(backend)
    t0 = time.perf_counter()
    alone = [eng.run(r, layout=lay).samples[0].image for r, lay in zip(reqs, lays, strict=True)]
    t_seq = time.perf_counter() - t0
    mb = MicroBatcher(backend.call, max_batch=2 * concurrency, window_s=0.004)
    beng = Engine(Backend(backend.name, backend.config, mb, backend.model_id,
                          backend.model_hash))
    out: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        out[i] = beng.run(reqs[i], layout=lays[i]).samples[0].image

    torch.set_num_threads(torch.get_num_threads())
    t0 = time.perf_counter()
    ths = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    t_batch = time.perf_counter() - t0
    mb.close()
    diffs = [int(np.abs(alone[i].astype(int) - out[i].astype(int)).max())
             for i in range(concurrency)]
    return {"case": f"{concurrency} concurrent requests, micro-batched vs one at a time",
            "sequential_images_per_s": round(concurrency / t_seq, 3),
            "batched_images_per_s": round(concurrency / t_batch, 3),
            "throughput_ratio": round(t_seq / t_batch, 2),
            "mean_rows_per_call": round(mb.stats.mean_batch_rows, 2),
            "max_pixel_diff_batched_vs_alone": max(diffs)}
