"""gRPC path vs in-process: request latency overhead and the load held (figures only).

Starts the real server (loopback, same process, its own event loop thread), then:
1. the same Generate request ``reps`` times in-process (Engine.run) and over gRPC, one at
   a time: median latency of each and the ratio;
2. a bounded load at each concurrency: p50/p95 latency, images/s and status codes.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from fetalflex.generation import GenerationRequest
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.client import load
from service.config import ServiceSettings
from service.server import Server


def bench_service(weights: Path | None, reps: int = 10, steps: int = 25,
                  concurrencies: tuple[int, ...] = (1, 4, 8), requests: int = 24
                  ) -> list[dict[str, Any]]:
    loop = asyncio.new_event_loop()
    holder: dict[str, Server] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["s"] = Server(ServiceSettings(port=0, metrics_port=0, weights=weights,
                                             max_concurrent=8, max_queued=64))
        loop.run_until_complete(holder["s"].start())
        ready.set()
        loop.run_forever()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    ready.wait(120)
    srv = holder["s"]
    target = f"127.0.0.1:{srv.port}"
    rows: list[dict[str, Any]] = []
    try:
        req = GenerationRequest(plane="TV", seed=1, steps=steps)
        srv.engine.run(req)  # warm-up
        t_in = []
        for _ in range(reps):
            t0 = time.perf_counter()
            srv.engine.run(req)
            t_in.append(time.perf_counter() - t0)
        t_rpc = []
        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.FetalFlexStub(ch)
            for _ in range(reps):
                t0 = time.perf_counter()
                stub.Generate(pb.GenerateRequest(plane="TV", seed=1, steps=steps), timeout=300)
                t_rpc.append(time.perf_counter() - t0)
        rows.append({"case": f"Generate TV DDIM-{steps}, one at a time",
                     "in_process_median_s": round(statistics.median(t_in), 4),
                     "grpc_median_s": round(statistics.median(t_rpc), 4),
                     "grpc_over_in_process": round(statistics.median(t_rpc) /
                                                   statistics.median(t_in), 3)})
        print(rows[-1], flush=True)
        for c in concurrencies:
            rows.append({"case": "bounded load", **load(target, c, requests, steps)})
            print(rows[-1], flush=True)
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        th.join(10)
    return rows
