"""``fetalflex bench step-profile``: where a served request's time goes, per sampler step.

The real gRPC server (loopback, same process, its own event-loop thread) serves ``reps``
Generate requests one at a time. From the server's own Prometheus histograms
(request seconds, denoiser-call seconds) and the client's clock, per request:

* denoiser: time inside the backend's model call (ONNX Runtime);
* orchestrator: the rest of the server's handling (validation, anatomy, sampler
  arithmetic, guidance, PNG encoding, metrics), also per step and as % of a step;
* transport: client latency minus the server's handling (gRPC, serialization, loopback).

Then one request runs in-process under cProfile, and the functions that take the most
time *outside* the model call are listed (what to optimise next in the orchestrator).
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

import grpc

from bench.results import print_table, write_results
from fetalflex.request import DEFAULT_PRECISION, GenerationRequest, Precision
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.metrics import REGISTRY
from service.server import running_server


def _sum(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(f"{name}_sum", labels) or 0.0


def bench_step_profile(weights: Path | None, out: Path, reps: int = 10,
                       precisions: tuple[Precision, ...] = (DEFAULT_PRECISION,),
                       plane: str = "TV", top: int = 12) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    profiles: dict[str, list[dict[str, Any]]] = {}
    for prec in precisions:
        settings = ServiceSettings(port=0, metrics_port=0, weights=weights, precision=prec)
        with running_server(settings) as srv, grpc.insecure_channel(
                f"127.0.0.1:{srv.port}") as ch:
            stub = pb_grpc.FetalFlexStub(ch)
            msg = pb.GenerateRequest(plane=plane, seed=1)
            stub.Generate(msg, timeout=300)  # warm-up
            req_l = {"method": "Generate", "code": "OK"}
            den_l = {"backend": srv.backend.name}
            client, server, denoiser = [], [], []
            calls = 0
            for _ in range(reps):
                r0 = _sum("fetalflex_request_duration_seconds", req_l)
                d0 = _sum("fetalflex_denoiser_call_duration_seconds", den_l)
                t0 = time.perf_counter()
                resp = stub.Generate(msg, timeout=300)
                client.append(time.perf_counter() - t0)
                server.append(_sum("fetalflex_request_duration_seconds", req_l) - r0)
                denoiser.append(_sum("fetalflex_denoiser_call_duration_seconds", den_l) - d0)
                calls = resp.denoiser_calls
            steps = GenerationRequest(plane=plane).steps
            c, s, d = (statistics.median(v) for v in (client, server, denoiser))
            orch = s - d
            rows.append({
                "precision": prec, "plane": plane, "steps": steps, "denoiser_calls": calls,
                "client_s": round(c, 4), "server_s": round(s, 4), "denoiser_s": round(d, 4),
                "orchestrator_s": round(orch, 4), "transport_s": round(c - s, 4),
                "step_ms": round(s / steps * 1e3, 2),
                "orchestrator_per_step_ms": round(orch / steps * 1e3, 2),
                "orchestrator_pct_of_step": round(100 * orch / s, 1)})
            # In-process profile of one request: the functions outside the model call.
            prof = cProfile.Profile()
            req = GenerationRequest(plane=plane, seed=1)
            prof.enable()
            srv.engine.run(req)
            prof.disable()
            st = pstats.Stats(prof)
            entries = []
            for (file, line, fn), (_, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
                entries.append({"function": f"{Path(file).name}:{line}:{fn}", "calls": nc,
                                "tottime_ms": round(tt * 1e3, 2),
                                "cumtime_ms": round(ct * 1e3, 2)})
            entries.sort(key=lambda e: -e["tottime_ms"])
            profiles[prec] = entries[:top]
            print(f"\n{prec}: top {top} functions by own time (one in-process request)")
            print_table(entries[:top])
    print()
    print_table(rows)
    write_results(out, "step_profile", rows, {"reps": reps, "profiles": profiles})
    return rows
