"""``fetalflex bench main-job``: seconds per image of the main job, variants side by side.

The main job is one image of a plane with the request schema's defaults on the embedded
default (ONNX Runtime, CPU, in-process). The contestants are every combination of the
given weights, precisions (fp32 / int8 graph), guidance values, steps and samplers, plus,
with ``baseline=True``, the notebook baseline: the PyTorch module run eagerly with DDIM-50
(what a researcher's notebook does). They run in one process, alternated per repetition
(A B A B ...), one image per plane per call, so a noisy machine's drifts hit all alike.
ONNX export and int8 quantization happen before timing (cached by weights hash).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from bench.results import interleaved, print_table, write_results
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.backends.backends import load_backend
from fetalflex.generation import Engine
from fetalflex.request import (
    DEFAULT_PRECISION,
    PRECISION_BACKENDS,
    GenerationRequest,
    Precision,
)
from fetalflex.weights import DEFAULT_WEIGHTS

NOTEBOOK_STEPS = 50  # the notebook baseline: diffusers' customary DDIM-50, PyTorch eager


def bench_main_job(weights: list[Path] | None, out: Path, guidances: tuple[float | None, ...]
                   = (None,), reps: int = 5, threads: int | None = None,
                   planes: tuple[str, ...] = PLANE_CODES,
                   precisions: tuple[Precision, ...] = (DEFAULT_PRECISION,),
                   steps: tuple[int | None, ...] = (None,),
                   samplers: tuple[str | None, ...] = (None,),
                   baseline: bool = False) -> list[dict[str, Any]]:
    """``None`` in guidances / steps / samplers leaves the field unset: the weights'
    recommended sampling (a distilled student's few steps), else the schema's default. The
    notebook baseline runs the first weights."""
    contestants: dict[str, Any] = {}
    facts: dict[str, dict[str, Any]] = {}

    def add(engine: Engine, label: str, opts: dict[str, Any], w: Path) -> None:
        reqs = [GenerationRequest(plane=p, seed=7, **opts) for p in planes]
        r0 = engine.resolve(reqs[0])  # as it runs: unset fields take the weights' sampling
        name = (f"{label} {engine.cfg.image_size}px {r0.sampler}-{r0.steps} "
                f"guidance {r0.guidance}")
        calls = engine.run(r0).denoiser_calls  # also warms the session up

        def run(engine: Engine = engine, reqs: list[GenerationRequest] = reqs) -> None:
            for r in reqs:
                engine.run(r)

        contestants[name] = run
        facts[name] = {"weights": str(w), "backend": engine.backend.name,
                       "precision": engine.backend.precision,
                       "image_size": engine.cfg.image_size, "sampler": r0.sampler,
                       "steps": r0.steps, "guidance": r0.guidance, "denoiser_calls": calls,
                       "model_hash": engine.backend.model_hash[:12]}

    all_weights = weights or [DEFAULT_WEIGHTS]
    for w in all_weights:
        for prec in precisions:
            # the first backend that runs the precision: the embedded graph for fp32 and
            # int8, torch under bf16 autocast for bf16 (PRECISION_BACKENDS)
            engine = Engine(load_backend(PRECISION_BACKENDS[prec][0], w, threads=threads,
                                         precision=prec))
            for g, s, smp in itertools.product(guidances, steps, samplers):
                opts = {k: v for k, v in (("guidance", g), ("steps", s), ("sampler", smp))
                        if v is not None}
                add(engine, f"{w.name or w} {prec}", opts, w)
        if baseline and w == all_weights[0]:  # the notebook runs the first (shipped) weights
            torch_engine = Engine(load_backend("torch", w, threads=threads))
            add(torch_engine, f"{w.name or w} notebook (torch eager)",
                {"steps": NOTEBOOK_STEPS, "sampler": "ddim"}, w)
    medians = interleaved(contestants, reps=reps, warmup=1)
    rows = [{"case": k, **facts[k], "s_per_image": medians[k] / len(planes)} for k in medians]
    base = rows[0]["s_per_image"]
    for r in rows:
        r["vs_first"] = base / r["s_per_image"]
    if baseline:
        nb = next(r for r in rows if "notebook" in r["case"])["s_per_image"]
        for r in rows:
            r["vs_notebook"] = nb / r["s_per_image"]
    print_table(rows)
    write_results(out, "main_job", rows, {"reps": reps, "planes": list(planes),
                                          "threads": threads})
    return rows
