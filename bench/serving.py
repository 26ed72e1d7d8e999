"""Serving benchmarks (figures only; nothing asserts a speed).

* ``bench_grpc``: the gRPC path's overhead. The real server (loopback, same process, its
  own event-loop thread); the same Generate request ``reps`` times in-process
  (``Engine.run``) and over gRPC, alternately: median latency of each and the ratio.
* ``bench_end_to_end``: images/s and p50/p95 latency at several client concurrencies,
  through the gRPC service, for four serving set-ups: the embedded ONNX Runtime backend
  with and without batching across requests (the orchestrator's micro-batcher), the same
  with the int8 graph (``--precision int8``), and a
  local Triton (CPU, Python backend + ONNX Runtime) with and without its dynamic batcher.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc

from bench.results import print_table, write_results
from bench.setups import CPU_SETUPS
from fetalflex.reports.figures import finish_pair, new_figure, save_figure
from fetalflex.request import DEFAULT_SAMPLER, DEFAULT_STEPS, GenerationRequest, denoiser_rows
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.client import load
from service.config import ServiceSettings
from service.server import running_server


def bench_grpc(weights: Path | None, out: Path, reps: int = 10, steps: int = DEFAULT_STEPS
               ) -> list[dict[str, Any]]:
    settings = ServiceSettings(port=0, metrics_port=0, weights=weights, max_concurrent=8,
                               max_queued=64)
    with running_server(settings) as srv, grpc.insecure_channel(
            f"127.0.0.1:{srv.port}") as ch:
        stub = pb_grpc.FetalFlexStub(ch)
        req = GenerationRequest(plane="TV", seed=1, steps=steps)
        srv.engine.run(req)  # warm-up, both paths
        stub.Generate(pb.GenerateRequest(plane="TV", seed=1, steps=steps), timeout=300)
        t_in, t_rpc = [], []
        for _ in range(reps):  # alternate: drifts of a noisy machine hit both alike
            t0 = time.perf_counter()
            srv.engine.run(req)
            t_in.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            stub.Generate(pb.GenerateRequest(plane="TV", seed=1, steps=steps), timeout=300)
            t_rpc.append(time.perf_counter() - t0)
    rows = [{"case": f"Generate TV DDIM-{steps}, one at a time", "reps": reps,
             "in_process_median_s": round(statistics.median(t_in), 4),
             "grpc_median_s": round(statistics.median(t_rpc), 4),
             "grpc_minus_in_process_ms": round((statistics.median(t_rpc) -
                                                statistics.median(t_in)) * 1e3, 1),
             "grpc_over_in_process": round(statistics.median(t_rpc) /
                                           statistics.median(t_in), 3)}]
    print_table(rows)
    write_results(out, "grpc_overhead", rows)
    return rows


def bench_end_to_end(weights: Path | None, out: Path,
                     concurrencies: tuple[int, ...] = (1, 4, 16), requests_per_client: int = 2,
                     min_requests: int = 8, steps: int | None = None,
                     setups: tuple[str, ...] = CPU_SETUPS,
                     triton_env: Path | None = None,
                     student: Path | None = None) -> list[dict[str, Any]]:
    """``steps`` None: each server's weights recommend the sampling (the requests leave it
    unset). ``student``: every set-up runs again with these weights (rows ``<setup>
    [student]``), side by side with the teacher in the same run."""
    from export.triton_repository import BatchingPolicy, write_repository
    from export.triton_server import DEFAULT_ENV, LocalTriton
    from fetalflex.backends.onnx_model import onnx_for
    from fetalflex.model.config import DenoiserConfig
    from fetalflex.weights import DEFAULT_WEIGHTS

    w = weights or DEFAULT_WEIGHTS
    cfg = DenoiserConfig.load(w / "config.json")
    top = max(concurrencies)
    rows: list[dict[str, Any]] = []
    runs = [(setup, w, setup) for setup in setups]
    if student is not None:
        runs += [(setup, student, f"{setup} [student]") for setup in setups]
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        for setup, weights_run, name in runs:
            base: dict[str, Any] = dict(port=0, metrics_port=0, weights=weights_run,
                                        max_concurrent=top, max_queued=4 * top,
                                        max_batch_rows=2 * top)
            if setup.startswith("triton"):
                dyn = setup.endswith("+batching")
                repo = Path(d) / f"repo-{int(dyn)}-{len(rows)}"
                write_repository(repo, DenoiserConfig.load(weights_run / "config.json"),
                                 onnx_for(weights_run), BatchingPolicy(dynamic=dyn))
                server = stack.enter_context(LocalTriton(repo, triton_env or DEFAULT_ENV,
                                                         workdir=Path(d) / "work"))
                settings = ServiceSettings(**base, backend="triton",
                                           triton_url=server.grpc_url)
            elif setup.startswith("torch"):
                settings = ServiceSettings(**base, backend="torch",
                                           device="cuda" if "-cuda" in setup else "cpu",
                                           batch_across_requests=setup.endswith("+batching"))
            else:
                settings = ServiceSettings(**base, backend="embedded",
                                           precision="int8" if "-int8" in setup else "fp32",
                                           batch_across_requests=setup.endswith("+batching"))
            with running_server(settings) as srv:
                target = f"127.0.0.1:{srv.port}"
                load(target, 1, 1, steps)  # warm-up
                for c in concurrencies:
                    n = max(min_requests, requests_per_client * c)
                    r = load(target, c, n, steps)
                    rows.append({"setup": name, "weights": str(weights_run),
                                 "precision": srv.backend.precision,
                                 "device": srv.backend.device,
                                 "concurrency": c, "requests": n,
                                 "rows_per_image": _rows_per_image(srv.engine, steps),
                                 "images_per_s": r["images_per_s"], "p50_s": r["p50_s"],
                                 "p95_s": r["p95_s"], "ok": r["codes"].get("OK", 0),
                                 "errors": n - r["codes"].get("OK", 0)})
                    print(rows[-1], flush=True)
            if setup.startswith("triton"):
                stack.close()  # stop this Triton before the next set-up starts
    for c in concurrencies:
        ref = next((r for r in rows if r["setup"] == runs[0][2] and r["concurrency"] == c),
                   None)
        for r in rows:
            if r["concurrency"] == c and ref:
                r[f"throughput_vs_{setups[0]}"] = round(r["images_per_s"] /
                                                        ref["images_per_s"], 2)
    print_table(rows)
    write_results(out, "end_to_end", rows, {"steps": steps if steps is not None else
                                            "recommended by each server's weights",
                                            "image_size": cfg.image_size,
                                            "note": "client, orchestrator and Triton share "
                                                    "this machine's CPUs"})
    _plot(rows, out / "end_to_end.png", steps)
    return rows


def _rows_per_image(engine: Any, steps: int | None) -> int:
    """Denoiser rows of one default image as the server runs it (guided: two per step)."""
    given: dict[str, Any] = {"plane": "TV"} | ({"steps": steps} if steps else {})
    req = engine.resolve(GenerationRequest.model_validate(given))
    contrast = bool(engine.cfg.sampling.contrast_planes(engine.appearance(req.appearance),
                                                        req.plane))
    return denoiser_rows(req.steps, req.guidance, engine.cfg.sampling.guidance_below_t,
                         engine.cfg.num_train_timesteps, contrast)


def _plot(rows: list[dict[str, Any]], path: Path, steps: int | None) -> None:
    fig, axes = new_figure(ncols=2, width=5, height=3.8)
    a0, a1 = axes[0]
    for setup in dict.fromkeys(r["setup"] for r in rows):
        sel = [r for r in rows if r["setup"] == setup]
        c = [r["concurrency"] for r in sel]
        w = Path(str(sel[0].get("weights", ""))).name
        what = f", {w}, {sel[0].get('rows_per_image', '?')} rows" if w else ""
        name = f"{setup} ({sel[0].get('precision', 'fp32')}{what})"
        line = a0.plot(c, [r["images_per_s"] for r in sel], "o-", label=name)[0]
        a1.plot(c, [r["p95_s"] for r in sel], "o-", color=line.get_color(),
                label=f"{name} p95")
        a1.plot(c, [r["p50_s"] for r in sel], "x--", color=line.get_color())
    finish_pair((a0, a1), "client concurrency",
                ("images per second", "latency s (solid p95, dashed p50)"),
                (f"End to end through gRPC ({DEFAULT_SAMPLER}-{steps})" if steps else
                 "End to end through gRPC (each weights' sampling)", "Request latency"))
    a0.set_ylim(bottom=0)
    save_figure(fig, path, "end-to-end throughput and latency; embedded vs Triton")
