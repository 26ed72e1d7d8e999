"""The fastest engine for this host: measured, validated, cached (``fetalflex tune``).

The machines under us change (an AMD EPYC with AVX-512 BF16 one day, an Intel Xeon with
AMX the next, a 2-core AVX2 one after), and so does the fastest way to run the same
denoiser. So the choice is measured, not assumed:

* **Candidates** (in-process engines only): ONNX Runtime fp32 and int8 at 1..N intra-op
  threads; the PyTorch module in fp32 and, where the device computes bf16 natively (CUDA,
  AVX-512 BF16, AMX), under bf16 autocast with channels-last activations. A bf16 engine on
  a CPU without native bf16 is emulated (slower than fp32) and is not tried.
* **Speed**: the median of ``calls`` timed calls (after two warm-up calls) at ``batch``
  rows (default 2: one guided image's conditional and unconditional rows).
* **Quality**: every candidate runs the same inputs (template layouts of every plane, noisy
  states at early, middle and late timesteps), and its output's relative RMS error against
  ONNX Runtime fp32 -- the arithmetic every ``fetalflex evaluate`` table was made with -- is
  recorded. Only arithmetic with an end-to-end quality measurement may be picked: fp32
  (must agree to ``FP32_TOLERANCE``) and int8 where its error stays within
  ``INT8_ADMITTED_ERROR``: v3's int8 graph (0.032 here) held adherence, brightness and every
  anomaly twin (``docs/EVALUATION.md``), but the int8 graph of the real-look student (0.105)
  doubled its FRD on real scans and lost TV recognition (session 21,
  ``benchmarks/real_eval_student_v6_int8.json``): an int8 graph is not good because it is
  int8. bf16 has no such table; it is admitted when, on this host and these inputs, it is at
  least as close to fp32 as an admitted int8 graph (``INT8_EVALUATED_ERROR`` when none is
  measured in the same run). The reason for each refusal is in the report.
* **Cache**: ``$FETALFLEX_CACHE/tune/<key>.json``, the key hashing the host's facts (CPU
  model, CPU count, the ISA flags that matter, GPU), the weights' content hash and the
  versions of fetalflex, ONNX Runtime and torch: another machine type, other weights or an
  upgrade measures again. ``--backend auto`` (CLI, ``FETALFLEX_BACKEND=auto`` for ``serve``)
  uses the cached choice, measuring first when there is none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fetalflex.about import __version__
from fetalflex.anatomy.compose import normal_layout
from fetalflex.anatomy.layout import one_hot
from fetalflex.anatomy.planes import PLANE_CODES, plane_index
from fetalflex.backends.onnx_model import cache_dir, weights_hash
from fetalflex.io.atomic import atomic_write_text
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import condition_vector
from fetalflex.model.hardware import bf16_native
from fetalflex.request import BackendName, Device, Precision

Log = Callable[[str], None]
_log = logging.getLogger("fetalflex.tune")

# An fp32 engine computes the same function as the reference up to summation order.
FP32_TOLERANCE = 1e-3
# The int8 graph's relative RMS error against fp32 on the tune inputs, measured on the
# shipped v3 weights (session 18, AMD EPYC AVX2): the error level whose images
# `fetalflex evaluate --precision int8` measured (docs/EVALUATION.md). Used as bf16's bar
# when int8 is not measured in the same run.
INT8_EVALUATED_ERROR = 0.032
# The most an int8 graph may differ from fp32 to be picked: the evaluated level with 25 %
# headroom for the same graph on another host. Measured above it and refused by evaluation:
# the real-look student's int8 graph, 0.105 (session 21).
INT8_ADMITTED_ERROR = 0.04
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
             "amx_tile")


@dataclass(frozen=True)
class Engine:
    """One way to run the denoiser here (``load_backend``'s arguments)."""

    backend: BackendName  # embedded | torch
    precision: Precision
    threads: int | None   # intra-op threads (None: the library's default)
    device: Device = "cpu"

    @property
    def label(self) -> str:
        where = self.device if self.backend == "torch" else "onnxruntime"
        return f"{self.backend}/{where} {self.precision} x{self.threads or 'default'} threads"


@dataclass
class Measured:
    engine: Engine
    ms: float | None = None           # median ms per call
    rel_error: float | None = None    # relative RMS error against ONNX Runtime fp32
    validated: bool = False
    reason: str = ""                  # why not picked (empty: eligible)


@dataclass
class TuneReport:
    key: str
    host: dict[str, Any]
    weights_sha256: str
    batch: int
    calls: int
    rows: list[Measured] = field(default_factory=list)
    choice: Engine | None = None
    measured_at: str = ""

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=2) + "\n"

    @staticmethod
    def from_json(text: str) -> TuneReport:
        d = json.loads(text)
        rows = [Measured(Engine(**r.pop("engine")), **r) for r in d.pop("rows")]
        choice = d.pop("choice", None)
        return TuneReport(rows=rows, choice=Engine(**choice) if choice else None, **d)

    def table(self) -> str:
        lines = [f"host: {self.host['cpu']} ({self.host['cpus']} CPUs; "
                 f"{', '.join(self.host['flags']) or 'no listed ISA flags'}"
                 f"{'; GPU ' + self.host['gpu'] if self.host.get('gpu') else ''})",
                 f"batch {self.batch} rows, median of {self.calls} calls",
                 "| engine | ms / call | rel. error vs fp32 | pickable |",
                 "| --- | --- | --- | --- |"]
        for r in self.rows:
            ms = f"{r.ms:.1f}" if r.ms is not None else "-"
            err = f"{r.rel_error:.2e}" if r.rel_error is not None else "-"
            ok = "yes" if r.validated else f"no: {r.reason}"
            star = " **(chosen)**" if self.choice == r.engine else ""
            lines.append(f"| {r.engine.label}{star} | {ms} | {err} | {ok} |")
        return "\n".join(lines)


# ---------------------------------------------------------------- the host
def host_facts() -> dict[str, Any]:
    """What decides the fastest engine: CPU model, usable CPUs, ISA flags, GPU."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.machine(),
                                                          platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"cpu": cpu, "cpus": int(cpus or 1), "flags": [f for f in CPU_FLAGS if f in flags],
            "bf16_native": bf16_native(), "gpu": gpu}


def versions() -> dict[str, str]:
    import onnxruntime

    return {"fetalflex": __version__, "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__}


def tune_key(host: dict[str, Any], weights_sha256: str) -> str:
    blob = json.dumps([host, weights_sha256, versions()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tune_path(key: str) -> Path:
    return cache_dir() / "tune" / f"{key}.json"


def thread_counts(cpus: int) -> list[int]:
    """1, 2, 4, ... up to the usable CPUs, and the count itself."""
    out, n = [], 1
    while n < cpus:
        out.append(n)
        n *= 2
    return [*out, cpus]


def candidates(host: dict[str, Any], precisions: Sequence[Precision] = ("fp32", "int8",
                                                                         "bf16")
               ) -> list[Engine]:
    out: list[Engine] = []
    onnx: tuple[Precision, ...] = ("fp32", "int8")
    for p in onnx:
        if p in precisions:
            out += [Engine("embedded", p, t) for t in thread_counts(host["cpus"])]
    if "fp32" in precisions:
        out.append(Engine("torch", "fp32", host["cpus"]))
    if "bf16" in precisions and host["bf16_native"]:
        out.append(Engine("torch", "bf16", host["cpus"]))
    if host["gpu"]:
        gpu: tuple[Precision, ...] = ("fp32", "bf16")
        out += [Engine("torch", p, None, "cuda") for p in gpu if p in precisions]
    return out


# ---------------------------------------------------------------- measuring
def tune_inputs(cfg: DenoiserConfig, batch: int) -> list[tuple[Tensor, ...]]:
    """Fixed inputs: a template layout of each plane (round robin) at t = 900, 500, 100,
    noisy states from a fixed seed; one tuple of ``batch`` rows per (plane, t)."""
    g = torch.Generator().manual_seed(0)
    s = cfg.image_size
    planes = [p for p in PLANE_CODES if plane_index(p) < cfg.num_planes]
    out: list[tuple[Tensor, ...]] = []
    for i, plane in enumerate(planes):
        lay = torch.from_numpy(np.stack([one_hot(normal_layout(plane, s, seed=i * batch + j)
                                                 .label_map) for j in range(batch)]))
        idx = torch.full((batch,), plane_index(plane), dtype=torch.long)
        cond = condition_vector(idx, torch.full((batch,), 25.0), cfg.num_planes,
                                torch.zeros(batch, dtype=torch.long), len(cfg.appearances))
        t = (900, 500, 100)[i % 3]
        out.append((torch.randn((batch, 1, s, s), generator=g),
                    torch.full((batch,), t, dtype=torch.long), lay, cond, torch.ones(batch)))
    return out


def measure(weights: Path, engine: Engine, inputs: list[tuple[Tensor, ...]], calls: int
            ) -> tuple[float, list[Tensor]]:
    """Median ms per call over ``calls`` timed calls, and the outputs on ``inputs``."""
    from fetalflex.backends.backends import load_backend

    b = load_backend(engine.backend, weights, threads=engine.threads,
                     precision=engine.precision, device=engine.device)
    outs = [b.call(*x) for x in inputs]  # also the warm-up
    b.call(*inputs[0])
    times = []
    for i in range(calls):
        t0 = time.perf_counter()
        b.call(*inputs[i % len(inputs)])
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), outs


def rel_error(got: list[Tensor], ref: list[Tensor]) -> float:
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(got, ref, strict=True))
    den = sum(float((b ** 2).sum()) for b in ref)
    return (num / max(den, 1e-12)) ** 0.5


def judge(rows: list[Measured]) -> list[Measured]:
    """Mark each measured row validated or give the reason it is not; the eligible rows.
    fp32 must match the reference; int8 must stay within ``INT8_ADMITTED_ERROR`` (the level
    evaluated end to end); bf16 must be no further from fp32 than an admitted int8 graph
    (measured in the same run, else the evaluated level)."""
    int8 = [r.rel_error for r in rows if r.engine.precision == "int8" and r.rel_error is not None
            and r.rel_error <= INT8_ADMITTED_ERROR]
    bar = max(int8) if int8 else INT8_EVALUATED_ERROR
    for r in rows:
        if r.reason or r.rel_error is None or r.ms is None:
            r.validated = False
            continue
        p = r.engine.precision
        if p == "fp32" and r.rel_error > FP32_TOLERANCE:
            r.reason = f"fp32 output differs from the reference by {r.rel_error:.1e}"
        elif p == "int8" and r.rel_error > INT8_ADMITTED_ERROR:
            r.reason = (f"int8 output differs from fp32 by {r.rel_error:.1e}, more than the "
                        f"evaluated level ({INT8_ADMITTED_ERROR:.1e}): these weights lose "
                        f"quality in int8")
        elif p == "bf16" and r.rel_error > bar:
            r.reason = (f"bf16 has no end-to-end evaluation and is further from fp32 "
                        f"({r.rel_error:.1e}) than the evaluated int8 graph ({bar:.1e})")
        r.validated = not r.reason
    return [r for r in rows if r.validated]


def tune(weights: Path, calls: int = 8, batch: int = 2,
         precisions: Sequence[Precision] = ("fp32", "int8", "bf16"), log: Log = _log.info
         ) -> TuneReport:
    """Measure every candidate here, validate it against ONNX Runtime fp32, pick the
    fastest eligible one, and cache the report."""
    if calls < 1 or batch < 1:
        raise ValueError(f"calls, batch: must be >= 1, got {calls}, {batch}")
    host = host_facts()
    digest = weights_hash(weights)
    key = tune_key(host, digest)
    cfg = DenoiserConfig.load(weights / "config.json")
    inputs = tune_inputs(cfg, batch)
    report = TuneReport(key, host, digest, batch, calls,
                        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    ref_engine = Engine("embedded", "fp32", host["cpus"])
    _, ref = measure(weights, ref_engine, inputs, 1)
    for e in candidates(host, precisions):
        row = Measured(e)
        try:
            row.ms, out = measure(weights, e, inputs, calls)
        except Exception as exc:  # noqa: BLE001 -- an engine that cannot run here is
            # reported in the table (and never chosen), not fatal to the measurement
            row.reason = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
            report.rows.append(row)
            log(f"tune: {e.label}: {row.reason}")
            continue
        row.rel_error = rel_error(out, ref)
        report.rows.append(row)
        log(f"tune: {e.label}: {row.ms:.1f} ms, rel. error {row.rel_error:.2e}")
    choice = rejudge(report).choice
    if choice is None:
        raise RuntimeError("tune: no engine ran and validated on this host (see the log)")
    path = tune_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, report.to_json())
    log(f"tune: chose {choice.label}; cached in {path}")
    return report


def cached_report(weights: Path) -> TuneReport | None:
    path = tune_path(tune_key(host_facts(), weights_hash(weights)))
    if not path.is_file():
        return None
    try:
        return TuneReport.from_json(path.read_text())
    except (ValueError, TypeError, KeyError):
        return None  # an unreadable cache is measured again


def rejudge(report: TuneReport) -> TuneReport:
    """The cached measurements judged again by today's rules (a rule may have tightened
    since they were made: a cached choice is never used past the rules that admit it)."""
    for r in report.rows:
        if not r.reason.startswith("failed"):
            r.reason = ""
    ok = judge(report.rows)
    report.choice = min(ok, key=lambda r: r.ms or float("inf")).engine if ok else None
    return report


def tuned_engine(weights: Path, log: Log = _log.info) -> Engine:
    """The cached choice for this host and weights (judged by today's rules), measured
    first when there is none."""
    report = cached_report(weights)
    if report is not None:
        before = report.choice
        report = rejudge(report)
        if before is not None and report.choice != before:
            log(f"tune: the cached choice {before.label} is no longer admitted "
                f"({next((r.reason for r in report.rows if r.engine == before), 'not measured')})")
    if report is None or report.choice is None:
        log("tune: no measurement for this host and these weights yet: measuring (once)")
        report = tune(weights, log=log)
    assert report.choice is not None  # tune() raises rather than choose nothing
    log(f"engine: {report.choice.label} (tuned on this host, {report.measured_at})")
    return report.choice
