"""A local Triton Inference Server from the ``nvidia-pytriton`` wheel (CPU, loopback).

The wheel carries a ``tritonserver`` binary (2.51) with the Python backend. Its Python
package pins numpy<2, so it lives in its own virtual environment (``.venv-triton``,
made by ``make triton-env``), which also holds onnxruntime for the CPU model. Used by the
tests and by ``make triton``; production runs NVIDIA's Triton container (deploy/).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from fetalflex.model.signature import DEFAULT_TRITON_MODEL

DEFAULT_ENV = Path(os.environ.get("FETALFLEX_TRITON_ENV", ".venv-triton"))


def _site_packages(env: Path) -> Path:
    found = sorted(env.glob("lib/python3.*/site-packages/pytriton"))
    if not found:
        raise FileNotFoundError(f"triton env: no nvidia-pytriton under {env} "
                                f"(make triton-env creates it)")
    return found[0].parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalTriton:
    def __init__(self, repository: Path, env: Path = DEFAULT_ENV, workdir: Path | None = None,
                 log: Path | None = None, ports: tuple[int, int, int] | None = None,
                 models: tuple[str, ...] | None = (DEFAULT_TRITON_MODEL,)) -> None:
        self.repository = repository.resolve()
        self.env = env.resolve()
        self.site = _site_packages(self.env)
        self.workdir = (workdir or Path(os.environ.get("TMPDIR", "/tmp")) /
                        f"fetalflex-triton-{os.getpid()}").resolve()
        self.log = log or self.workdir / "tritonserver.log"
        self.http_port, self.grpc_port, self.metrics_port = ports or (
            free_port(), free_port(), free_port())
        self.models = models  # None: every model in the repository
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _prepare(self) -> Path:
        """Server binaries plus the Python-backend stub for this Python version."""
        server = self.workdir / "tritonserver"
        if not (server / "bin" / "tritonserver").exists():
            src = self.site / "pytriton" / "tritonserver"
            shutil.copytree(src / "bin", server / "bin", dirs_exist_ok=True)
            shutil.copytree(src / "backends", server / "backends", dirs_exist_ok=True)
            ver = f"{sys.version_info.major}.{sys.version_info.minor}"
            env_ver = self.site.parent.name.removeprefix("python")
            stub = src / "python_backend_stubs" / env_ver / "triton_python_backend_stub"
            if not stub.exists():
                raise FileNotFoundError(f"no Python-backend stub for Python {env_ver} ({ver})")
            shutil.copy(stub, server / "backends" / "python" / "triton_python_backend_stub")
        return server

    def start(self, timeout_s: float = 90.0) -> LocalTriton:
        server = self._prepare()
        env = dict(os.environ)
        env["PATH"] = f"{self.env / 'bin'}:{env.get('PATH', '')}"
        libs = self.site / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = f"{libs}:{env.get('LD_LIBRARY_PATH', '')}"
        cmd = [str(server / "bin" / "tritonserver"),
               f"--model-repository={self.repository}",
               f"--backend-directory={server / 'backends'}",
               "--http-address=127.0.0.1", f"--http-port={self.http_port}",
               "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
               "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
               "--allow-gpu-metrics=false", "--exit-timeout-secs=5", "--log-verbose=0"]
        if self.models is not None:  # the GPU models of the repository stay unloaded
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.models]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        logf = self.log.open("ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL (a crash), for failure tests."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as r:
            return r.read().decode()

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def metric_sum(text: str, name: str, model: str | None = None) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and (model is None or f'model="{model}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description="Run a local CPU Triton on loopback.")
    ap.add_argument("--repository", default="model_repository")
    ap.add_argument("--env", default=str(DEFAULT_ENV))
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--metrics-port", type=int, default=8002)
    args = ap.parse_args()
    t = LocalTriton(Path(args.repository), Path(args.env),
                    ports=(args.http_port, args.grpc_port, args.metrics_port))
    t.start()
    print(f"Triton ready: gRPC {t.grpc_url}, metrics {t.metrics_url}; log {t.log}. Ctrl-C stops.")
    try:
        while t.proc is not None and t.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        t.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
