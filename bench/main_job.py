"""``fetalflex bench main-job``: seconds per image of the default request, side by side.

The main job is one image of a plane with the request schema's defaults on the embedded
default (ONNX Runtime, CPU, in-process). Several contestants (weights x guidance) run in one
process, alternated per repetition (A B A B ...), one image per plane per call, so a noisy
machine's drifts hit all alike. The ONNX export happens before timing (cached by weights hash).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.results import interleaved, print_table, write_results
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.backends.backends import load_backend
from fetalflex.generation import Engine
from fetalflex.request import GenerationRequest
from fetalflex.weights import DEFAULT_WEIGHTS


def bench_main_job(weights: list[Path] | None, out: Path, guidances: tuple[float | None, ...]
                   = (None,), reps: int = 5, threads: int | None = None,
                   planes: tuple[str, ...] = PLANE_CODES) -> list[dict[str, Any]]:
    contestants: dict[str, Any] = {}
    facts: dict[str, dict[str, Any]] = {}
    for w in weights or [DEFAULT_WEIGHTS]:
        engine = Engine(load_backend("embedded", w, threads=threads))
        for g in guidances:
            reqs = [GenerationRequest(plane=p, seed=7) if g is None
                    else GenerationRequest(plane=p, seed=7, guidance=g) for p in planes]
            name = f"{w.name or w} {engine.cfg.image_size}px guidance {reqs[0].guidance}"
            calls = engine.run(reqs[0]).denoiser_calls  # also warms the session up

            def run(engine: Engine = engine, reqs: list[GenerationRequest] = reqs) -> None:
                for r in reqs:
                    engine.run(r)

            contestants[name] = run
            facts[name] = {"weights": str(w), "image_size": engine.cfg.image_size,
                           "guidance": reqs[0].guidance, "steps": reqs[0].steps,
                           "denoiser_calls": calls, "model_hash": engine.backend.model_hash[:12]}
    medians = interleaved(contestants, reps=reps, warmup=1)
    rows = [{"case": k, **facts[k], "s_per_image": medians[k] / len(planes)} for k in medians]
    base = rows[0]["s_per_image"]
    for r in rows:
        r["vs_first"] = base / r["s_per_image"]
    print_table(rows)
    write_results(out, "main_job", rows, {"reps": reps, "planes": list(planes),
                                          "threads": threads})
    return rows
