"""Triton vs embedded, on this machine: per-step latency and dynamic batching (figures).

Starts a local CPU Triton (nvidia-pytriton's tritonserver) serving the shipped model's
CPU variant, then measures in one process, side by side:

* per-step latency of one guided denoiser call (batch 2: cond + uncond) through Triton
  (gRPC on loopback, Python backend, ONNX Runtime) and in-process (embedded ONNX Runtime):
  the RPC overhead as a ratio;
* 8 concurrent generations through Triton: rows per model execution (Triton's
  ``nv_inference_count / nv_inference_exec_count``) and throughput against the same 8
  generations one at a time.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from bench.results import write_results
from export.triton_repository import write_repository
from export.triton_server import DEFAULT_ENV, LocalTriton, metric_sum
from fetalflex.backends.backends import load_backend
from fetalflex.backends.onnx_model import example_inputs, export_onnx
from fetalflex.generation import Engine
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.signature import DEFAULT_TRITON_MODEL
from fetalflex.request import GenerationRequest
from fetalflex.weights import DEFAULT_WEIGHTS

MODEL = DEFAULT_TRITON_MODEL


def _step_latency(call: Any, cfg: DenoiserConfig, reps: int) -> float:
    ins = example_inputs(cfg, 2)
    for _ in range(3):
        call(*ins)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        call(*ins)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_triton(weights: Path | None = None, env: Path = DEFAULT_ENV, reps: int = 30,
                 concurrency: int = 8, steps: int = 25, out: Path | None = None
                 ) -> list[dict[str, Any]]:
    w = weights or DEFAULT_WEIGHTS
    cfg = DenoiserConfig.load(w / "config.json")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        onnx = export_onnx(FetalFlexDenoiser.load(w), tmp / "d.onnx")
        write_repository(tmp / "repo", cfg, onnx)
        with LocalTriton(tmp / "repo", env, workdir=tmp / "work") as server:
            tri = load_backend("triton", w, triton_url=server.grpc_url)
            emb = load_backend("embedded", w)
            lt = _step_latency(tri.call, cfg, reps)
            le = _step_latency(emb.call, cfg, reps)
            rows.append({"case": "per-step latency, batch 2 (cond+uncond)",
                         "image_size": cfg.image_size, "triton_ms": round(lt * 1e3, 2),
                         "embedded_ms": round(le * 1e3, 2),
                         "triton_over_embedded": round(lt / le, 2)})
            print(rows[-1], flush=True)
            reqs = [GenerationRequest(plane="AC", seed=i, steps=steps)
                    for i in range(concurrency)]
            eng = Engine(tri)
            t0 = time.perf_counter()
            for r in reqs:
                eng.run(r)
            t_seq = time.perf_counter() - t0
            m0 = server.metrics()
            t0 = time.perf_counter()
            ths = [threading.Thread(target=lambda r=r: Engine(tri).run(r)) for r in reqs]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            t_con = time.perf_counter() - t0
            m1 = server.metrics()
            count = metric_sum(m1, "nv_inference_count", MODEL) - metric_sum(
                m0, "nv_inference_count", MODEL)
            execs = metric_sum(m1, "nv_inference_exec_count", MODEL) - metric_sum(
                m0, "nv_inference_exec_count", MODEL)
            rows.append({"case": f"{concurrency} concurrent generations through Triton",
                         "rows": int(count), "executions": int(execs),
                         "mean_rows_per_execution": round(count / max(execs, 1), 2),
                         "sequential_images_per_s": round(concurrency / t_seq, 3),
                         "concurrent_images_per_s": round(concurrency / t_con, 3),
                         "throughput_ratio": round(t_seq / t_con, 2),
                         "threads": torch.get_num_threads()})
            print(rows[-1], flush=True)
    if out is not None:
        write_results(out, "triton_step", rows, {"steps": steps})
    return rows
