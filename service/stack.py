"""The local stack of real parts, on loopback: Triton (CPU, nvidia-pytriton's binary), the
orchestrator using it, and a real Prometheus scraping both with our rules loaded.

``python -m service.stack`` starts it and waits (Ctrl-C stops everything);
``python -m service.stack --smoke`` sends generations, asks Prometheus (HTTP API) for the
request-latency quantile and Triton's inference count, prints the answers and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from export.triton_repository import write_repository
from export.triton_server import DEFAULT_ENV, LocalTriton, free_port
from fetalflex.backends.onnx_model import export_onnx
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.signature import DEFAULT_TRITON_MODEL
from fetalflex.weights import DEFAULT_WEIGHTS
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"


class Stack:
    def __init__(self, weights: Path | None = None, env: Path = DEFAULT_ENV,
                 workdir: Path | None = None) -> None:
        self.weights = (weights or DEFAULT_WEIGHTS).resolve()
        self.env = env
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="fetalflex-stack-"))
        self.triton: LocalTriton | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.prom_port = free_port()

    def up(self) -> Stack:
        cfg = DenoiserConfig.load(self.weights / "config.json")
        onnx = export_onnx(FetalFlexDenoiser.load(self.weights), self.dir / "denoiser.onnx")
        write_repository(self.dir / "repo", cfg, onnx)
        self.triton = LocalTriton(self.dir / "repo", self.env, workdir=self.dir / "triton")
        self.triton.start()
        settings = {"port": self.grpc_port, "metrics_port": self.metrics_port,
                    "backend": "triton", "triton_url": self.triton.grpc_url,
                    "weights": str(self.weights), "max_concurrent": 8, "max_queued": 32}
        (self.dir / "settings.json").write_text(json.dumps(settings))
        log = (self.dir / "orchestrator.log").open("w")
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "fetalflex.cli", "serve", "--config",
             str(self.dir / "settings.json")], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "FETALFLEX_CACHE": str(self.dir / "cache")}))
        self._wait(lambda: "serving on port" in (self.dir / "orchestrator.log").read_text(),
                   "orchestrator", 120)
        prom = shutil.which("prometheus")
        if prom is None:
            raise FileNotFoundError("prometheus: not installed (Debian package prometheus)")
        shutil.copy(RULES, self.dir / "rules.yaml")
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "rule_files: [rules.yaml]\nscrape_configs:\n"
            f"  - job_name: fetalflex-orchestrator\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.metrics_port}']\n"
            f"  - job_name: triton\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.triton.metrics_port}']\n")
        plog = (self.dir / "prometheus.log").open("w")
        self.procs.append(subprocess.Popen(
            [prom, f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.prom_port}"],
            stdout=plog, stderr=subprocess.STDOUT))
        self._wait(self._prom_ready, "prometheus", 60)
        return self

    def _prom_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.prom_port}/-/ready",
                                        timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def _wait(self, ok: Any, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{what}: a stack process exited early (logs in {self.dir})")
            if ok():
                return
            time.sleep(0.3)
        raise TimeoutError(f"{what} not ready after {timeout:.0f} s (logs in {self.dir})")

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.prom_port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read())
        if data.get("status") != "success":
            raise RuntimeError(f"prometheus query failed: {data}")
        return list(data["data"]["result"])

    def _poll(self, promql: str, ok: Any, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.query(promql)
            if res and ok(res):
                return res
            time.sleep(0.5)
        raise RuntimeError(f"prometheus: no satisfying answer to {promql} in {timeout:.0f} s")

    def smoke(self, n: int = 6, steps: int = 8) -> dict[str, Any]:
        count_q = 'sum(fetalflex_request_duration_seconds_count{method="Generate"})'
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as ch:
            stub = pb_grpc.FetalFlexStub(ch)
            for i in range(n):
                stub.Generate(pb.GenerateRequest(plane=("TV", "AC", "FL")[i % 3], seed=i,
                                                 steps=steps), timeout=120)
                if i == 0:  # rate() needs the new series scraped before the rest arrives
                    self._poll(count_q, lambda r: float(r[0]["value"][1]) >= 1, 60)
        self._poll(count_q, lambda r: float(r[0]["value"][1]) >= n, 60)
        q_lat = ('histogram_quantile(0.5, sum by (le) (rate('
                 'fetalflex_request_duration_seconds_bucket{method="Generate"}[2m])))')
        q_count = f'sum(nv_inference_count{{model="{DEFAULT_TRITON_MODEL}"}})'
        lat = self._poll(q_lat, lambda r: r[0]["value"][1] not in ("NaN", "+Inf"), 60)
        cnt = self._poll(q_count, lambda r: float(r[0]["value"][1]) >= n * steps * 2, 60)
        rules = self._poll("fetalflex:request_rate:5m", lambda r: True, 60)
        return {q_lat: float(lat[0]["value"][1]), q_count: float(cnt[0]["value"][1]),
                "fetalflex:request_rate:5m (recording rule)": [
                    (r["metric"].get("method"), float(r["value"][1])) for r in rules]}

    def down(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.triton is not None:
            self.triton.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--env", default=str(DEFAULT_ENV))
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    stack = Stack(Path(args.weights) if args.weights else None, Path(args.env))
    try:
        stack.up()
        tri = stack.triton.grpc_url if stack.triton else "-"
        print(f"stack up: gRPC 127.0.0.1:{stack.grpc_port}, Prometheus "
              f"http://127.0.0.1:{stack.prom_port}, Triton {tri}; logs in {stack.dir}",
              flush=True)
        if args.smoke:
            for k, v in stack.smoke().items():
                print(f"{k} = {v}")
            return 0
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        stack.down()


if __name__ == "__main__":
    raise SystemExit(main())
