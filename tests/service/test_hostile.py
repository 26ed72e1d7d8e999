"""A hostile client against the real server on loopback: one status per failure class,
bounded messages, validation before admission, metrics counted once, an access-log line
per RPC, clean logs on cancellation, flat memory under PNG bombs, and health probes
answered while CPU-heavy hostile requests run."""

from __future__ import annotations

import functools
import gc
import io
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from fetalflex.errors import SamplingCancelledError
from fetalflex.generation import Progress
from fetalflex.sampling.events import Step
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.errors import MAX_DETAIL
from service.metrics import REGISTRY
from service.server import Server, running_server

BOMB_SIDE = 13_000  # 169 Mpx: Pillow warns (> 89.5 Mpx) and decodes it (161 MiB)
HUGE_SIDE = 20_000  # 400 Mpx: over Pillow's decompression-bomb error limit (179 Mpx)


# ---------------------------------------------------------------- hostile inputs

def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A valid grayscale PNG of side x side zeros, about 164 KB compressed (streamed, so
    building it costs no memory)."""
    z = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def many_components(size: int, label: int = 4, background: int = 1, step: int = 4
                    ) -> np.ndarray:
    """A label map of size x size with (size/step)^2 separate 2x2 blobs."""
    lm = np.full((size, size), background, np.uint8)
    for y in range(1, size - 2, step):
        for x in range(1, size - 2, step):
            lm[y:y + 2, x:x + 2] = label
    return lm


@functools.cache
def bomb(side: int = BOMB_SIDE) -> bytes:
    return bomb_png(side)


GIF = b"GIF89a" + b"\0" * 40
TRUNCATED = png(np.zeros((32, 32)))[:40]
LABELS_32 = png(np.full((32, 32), 2))  # amniotic fluid everywhere: valid for any plane
GRAY_32 = png(np.full((32, 32), 128))
REMOVE_CSP = '{"op": "remove", "structure": "cavum_septi_pellucidi"}'

GENERATE_CASES: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("deep-json-recursion", lambda: dict(plane="TV", edits=[pb.Edit(json="[" * 5000 + "]" * 5000)]),
     "edits[0].json: nested more than"),
    ("deep-json-shallow", lambda: dict(plane="TV", edits=[pb.Edit(json="[" * 20 + "]" * 20)]),
     "edits[0].json: nested more than"),
    ("huge-json", lambda: dict(plane="TV", edits=[pb.Edit(json="[" * 100_000)]),
     "edits[0].json: at most"),
    ("json-nan", lambda: dict(plane="TV", edits=[pb.Edit(
        json='{"op": "scale", "structures": ["skull"], "factor": NaN}')]), "edits[0].json"),
    ("too-many-edits", lambda: dict(plane="TV", edits=[pb.Edit(json=REMOVE_CSP)] * 40), "edits"),
    ("reference-region-no-edits", lambda: dict(plane="TV", reference_png=GRAY_32,
                                       reference_label_map_png=LABELS_32,
                                       edit_region_png=GRAY_32), "edits: a repaint"),
    ("reference-map-without-reference", lambda: dict(plane="TV", reference_label_map_png=LABELS_32),
     "reference_label_map_png: only with reference_png"),
    ("bomb-reference", lambda: dict(plane="TV", preset="absent_csp", reference_png=bomb(),
                            reference_label_map_png=LABELS_32),
     f"reference_png: is {BOMB_SIDE}x{BOMB_SIDE}"),
    ("bomb-over-pillow-limit", lambda: dict(plane="TV", preset="absent_csp",
                                            reference_png=bomb(HUGE_SIDE),
                                            reference_label_map_png=LABELS_32),
     f"reference_png: is {HUGE_SIDE}x{HUGE_SIDE}"),
    ("bomb-label-map", lambda: dict(plane="TV", layout=pb.Layout(label_map_png=bomb())),
     f"layout.label_map_png: is {BOMB_SIDE}x{BOMB_SIDE}"),
    ("truncated-png", lambda: dict(plane="TV", layout=pb.Layout(label_map_png=TRUNCATED)),
     "layout.label_map_png: not a readable PNG"),
    ("gif-not-png", lambda: dict(plane="TV", layout=pb.Layout(label_map_png=GIF)),
     "layout.label_map_png: not a PNG"),
    ("echo-100k-plane", lambda: dict(plane="X" * 100_000), "plane"),
    ("echo-100k-preset", lambda: dict(plane="TV", preset="Y" * 100_000), "preset"),
    ("echo-15k-structure", lambda: dict(plane="TV", edits=[pb.Edit(
        json='{"op": "remove", "structure": "' + "z" * 15_000 + '"}')]), "edits[0]"),
    ("sampler-99", lambda: dict(plane="TV", sampler=99), "sampler: unknown value 99"),
    ("repaint-over-budget", lambda: dict(plane="TV", preset="ventriculomegaly", pair=True,
                                         repaint=pb.RepaintOptions(steps=200, jump_length=1,
                                                                   jump_n_sample=10)),
     "repaint: the schedule makes"),
    ("format-99", lambda: dict(plane="TV", output_format=99), "output_format: unknown value 99"),
    ("field-mm-negative", lambda: dict(plane="TV", layout=pb.Layout(label_map_png=LABELS_32,
                                                            field_mm=-1)), "layout.field_mm"),
    ("field-mm-1e38", lambda: dict(plane="TV", layout=pb.Layout(label_map_png=LABELS_32,
                                                        field_mm=1e38)), "layout.field_mm"),
    ("field-mm-nan", lambda: dict(plane="TV", layout=pb.Layout(label_map_png=LABELS_32,
                                                       field_mm=float("nan"))),
     "layout.field_mm"),
    ("repaint-steps", lambda: dict(plane="TV", preset="absent_csp", pair=True,
                           repaint=pb.RepaintOptions(steps=-1)), "repaint.steps"),
    ("guidance-too-big", lambda: dict(plane="TV", guidance_scale=1e9), "guidance_scale"),
    ("template-seed", lambda: dict(plane="TV", layout=pb.Layout(template=pb.Template(seed=-4))),
     "layout.template.seed"),
]

RENDER_CASES: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("size-2000", lambda: dict(plane="TV", size=2000), "size"),
    ("seed-negative", lambda: dict(plane="TV", seed=-1), "seed"),
    ("plane-100k", lambda: dict(plane="X" * 100_000), "plane"),
    ("bomb-label-map", lambda: dict(plane="TV", size=64,
                                    layout=pb.Layout(label_map_png=bomb())),
     f"layout.label_map_png: is {BOMB_SIDE}x{BOMB_SIDE}"),
    ("components-1024", lambda: dict(plane="TV", size=1024, layout=pb.Layout(
        label_map_png=png(many_components(1024)))), "label components"),
    ("components-256", lambda: dict(plane="TV", size=256, layout=pb.Layout(
        label_map_png=png(many_components(256)))), "label components"),
    ("deep-json", lambda: dict(plane="TV", edits=[pb.Edit(json="{" * 3000)]), "edits[0].json"),
    ("field-mm", lambda: dict(plane="TV", size=32, layout=pb.Layout(label_map_png=LABELS_32,
                                                            field_mm=-5)), "layout.field_mm"),
]


# ---------------------------------------------------------------- the server

class Running:
    def __init__(self, settings: ServiceSettings) -> None:
        self._ctx = running_server(settings, start_timeout_s=60, stop_timeout_s=30)
        self.server: Server = self._ctx.__enter__()
        self.target = f"127.0.0.1:{self.server.port}"
        self.channel = grpc.insecure_channel(self.target)
        self.stub = pb_grpc.FetalFlexStub(self.channel)

    @property
    def calls(self) -> int:
        return int(self.server.backend.call.stats.calls)  # type: ignore[union-attr]

    def stop(self) -> None:
        self.channel.close()
        self._ctx.__exit__(None, None, None)


@pytest.fixture(scope="module")
def server(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    os.environ["FETALFLEX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    r = Running(ServiceSettings(port=0, metrics_port=0, weights=tiny_weights,
                                max_concurrent=1, max_queued=0, max_count=4, max_steps=50,
                                grace_s=2))
    yield r
    r.stop()


@contextmanager
def saturated(server: Running, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The only generation slot is held (by a stream whose engine waits to be stopped);
    max_queued=0, so any request that reaches admission is shed."""
    release = threading.Event()

    def blocking(*_a: Any, should_stop: Callable[[], bool], **_k: Any) -> Iterator[Progress]:
        x = torch.zeros(1, 1, 32, 32)
        yield Progress("sample", Step(0, 999, x, x))
        while not release.is_set():
            if should_stop():
                raise SamplingCancelledError
            time.sleep(0.005)
        raise SamplingCancelledError

    servicer = server.server.servicer
    monkeypatch.setattr(servicer.engine, "run_progressive", blocking)
    stream = server.stub.GenerateStream(pb.GenerateRequest(plane="TV", steps=2))
    next(stream)
    assert servicer.admission.running == 1
    try:
        yield
    finally:
        stream.cancel()
        release.set()
        _wait(lambda: servicer.admission.running == 0)
        monkeypatch.undo()


def _wait(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _status(fn: Callable[..., Any], req: Any, timeout: float = 60) -> tuple[grpc.StatusCode,
                                                                              str]:
    try:
        fn(req, timeout=timeout)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _access(caplog: pytest.LogCaptureFixture, method: str, n: int) -> list[str]:
    """The access lines of ``method`` once ``n`` have arrived (a handler logs after its
    status has been sent, so the client can be first)."""
    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "fetalflex.service.access"
                and f"method={method} " in r.getMessage()]

    _wait(lambda: len(lines()) >= n, timeout=5)
    time.sleep(0.05)  # a line too many would show now
    return lines()


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------- one status per class

@pytest.mark.parametrize(("fields", "needle"), [c[1:] for c in GENERATE_CASES],
                         ids=[c[0] for c in GENERATE_CASES])
def test_hostile_generate_is_invalid_argument_before_admission(
        server: Running, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any],
        needle: str) -> None:
    """Refused as INVALID_ARGUMENT naming the field, with a bounded message, while the
    only slot is taken: validation never reaches admission (that would shed) nor the
    model."""
    before = server.calls
    with saturated(server, monkeypatch):
        code, details = _status(server.stub.Generate, pb.GenerateRequest(**fields()))
    assert (code, needle in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), details
    assert len(details) <= MAX_DETAIL
    assert server.calls == before


@pytest.mark.parametrize(("fields", "needle"), [c[1:] for c in RENDER_CASES],
                         ids=[c[0] for c in RENDER_CASES])
def test_hostile_render_layout_is_invalid_argument(
        server: Running, fields: Callable[[], dict[str, Any]], needle: str) -> None:
    code, details = _status(server.stub.RenderLayout, pb.RenderLayoutRequest(**fields()))
    assert (code, needle in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), details
    assert len(details) <= MAX_DETAIL


def test_a_bug_is_internal_with_an_error_id_and_one_access_line(
        server: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_a: Any, **_k: Any) -> Iterator[Progress]:
        raise KeyError("secret-internal-detail")
        yield {}  # pragma: no cover

    monkeypatch.setattr(server.server.servicer.engine, "run_progressive", broken)
    with caplog.at_level(logging.INFO, logger="fetalflex.service"):
        code, details = _status(server.stub.Generate, pb.GenerateRequest(
            plane="TV", steps=2, client_request_id="SENTINEL-REQ-ID-5"))
        access = _access(caplog, "Generate", 1)
    assert code == grpc.StatusCode.INTERNAL
    assert details.startswith("internal error (id ") and "secret" not in details
    error_id = details.removeprefix("internal error (id ").removesuffix(")")
    assert len(access) == 1
    assert access[0].startswith("rpc method=Generate code=INTERNAL duration_ms=")
    assert access[0].endswith(f" error_id={error_id}")
    assert all("SENTINEL-REQ-ID-5" not in r.getMessage() for r in caplog.records)


def test_a_value_error_from_our_code_is_internal_not_invalid_argument(
        server: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain ValueError is a bug of ours, not the caller's input: INTERNAL with an id
    (logged with its traceback), whether the sampler or the request translation raises it
    and whether the RPC is unary or streaming."""
    def broken_sampler(*_a: Any, **_k: Any) -> Iterator[Progress]:
        raise ValueError("steps: secret-internal-detail")
        yield  # pragma: no cover

    def broken_layout(*_a: Any, **_k: Any) -> Any:
        raise ValueError("layout: secret-internal-detail")

    monkeypatch.setattr(server.server.servicer.engine, "run_progressive", broken_sampler)
    monkeypatch.setattr("fetalflex.anatomy.compose.extract", broken_layout)
    calls = [(server.stub.Generate, pb.GenerateRequest(plane="TV", steps=2)),
             (lambda r, timeout: list(server.stub.GenerateStream(r, timeout=timeout)),
              pb.GenerateRequest(plane="TV", steps=2)),
             (server.stub.RenderLayout, pb.RenderLayoutRequest(plane="TV", size=32))]
    with caplog.at_level(logging.ERROR, logger="fetalflex.service"):
        answers = [_status(fn, req) for fn, req in calls]
    for code, details in answers:
        assert code == grpc.StatusCode.INTERNAL, details
        assert details.startswith("internal error (id ") and "secret" not in details
        error_id = details.removeprefix("internal error (id ").removesuffix(")")
        logged = [r for r in caplog.records if error_id in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None


# ---------------------------------------------------------------- metrics and logs

def test_shed_requests_are_counted_once_and_logged_once(
        server: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shed = {"reason": "overloaded"}
    seconds = {"method": "Generate", "code": "RESOURCE_EXHAUSTED"}
    before = _metric("fetalflex_requests_rejected_total", shed)
    before_s = _metric("fetalflex_request_duration_seconds_count", seconds)
    n = 7
    with saturated(server, monkeypatch), caplog.at_level(logging.INFO,
                                                         logger="fetalflex.service"):
        codes = [_status(server.stub.Generate, pb.GenerateRequest(
            plane="TV", steps=2, client_request_id=f"SENTINEL-{i}"))[0] for i in range(n)]
        lines = _access(caplog, "Generate", n)  # logged after the metrics are recorded
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * n
    assert _metric("fetalflex_requests_rejected_total", shed) - before == n
    assert _metric("fetalflex_request_duration_seconds_count", seconds) - before_s == n
    assert sum("code=RESOURCE_EXHAUSTED" in m for m in lines) == n
    assert not any("SENTINEL-" in r.getMessage() for r in caplog.records)


def test_cancelled_stream_logs_one_line_and_nothing_else(
        server: Running, caplog: pytest.LogCaptureFixture) -> None:
    adm = server.server.servicer.admission
    with caplog.at_level(logging.DEBUG):
        stream = server.stub.GenerateStream(pb.GenerateRequest(plane="TV", steps=50))
        next(stream)
        stream.cancel()
        _wait(lambda: adm.running == 0 and not server.server.servicer._busy)
        gc.collect()  # an unretrieved task exception is reported when the task is freed
        time.sleep(0.2)
        access = _access(caplog, "GenerateStream", 1)
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == []
    assert len(access) == 1 and "code=CANCELLED" in access[0]


# ---------------------------------------------------------------- memory and liveness

def _proc_status(key: str) -> int:
    """A /proc/self/status field in KiB (this process holds the server)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        return False
    return True


def test_png_bombs_are_refused_from_the_header_and_memory_stays_flat(
        server: Running) -> None:
    req = pb.GenerateRequest(plane="TV", preset="absent_csp", reference_png=bomb(),
                             reference_label_map_png=LABELS_32)
    assert _status(server.stub.Generate, req)[0] == grpc.StatusCode.INVALID_ARGUMENT
    gc.collect()
    rss0 = _proc_status("VmRSS")
    peak_resettable = _reset_peak()
    t0 = time.perf_counter()
    for _ in range(50):
        assert _status(server.stub.Generate, req)[0] == grpc.StatusCode.INVALID_ARGUMENT
    elapsed = time.perf_counter() - t0
    gc.collect()
    rss1, peak = _proc_status("VmRSS"), _proc_status("VmHWM")
    print(f"\n50 PNG bombs ({len(bomb())} B, {BOMB_SIDE}^2 declared): {elapsed:.2f} s; "
          f"VmRSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB; peak {peak / 1024:.1f} MiB "
          f"(reset: {peak_resettable})")
    assert rss1 - rss0 < 32 * 1024  # one decoded bomb alone is 161 MiB
    if peak_resettable:
        assert peak - rss0 < 64 * 1024


def test_health_answers_while_hostile_requests_run(server: Running) -> None:
    """CPU-heavy or hostile RenderLayout/Generate requests in flight; every health probe
    is answered within 2 s."""
    hostile: list[tuple[str, Any]] = [
        ("RenderLayout", pb.RenderLayoutRequest(plane="TV", size=1024, preset="absent_csp")),
        ("RenderLayout", pb.RenderLayoutRequest(plane="TV", size=1024, layout=pb.Layout(
            label_map_png=png(many_components(1024))))),
        ("RenderLayout", pb.RenderLayoutRequest(plane="TV", size=192, layout=pb.Layout(
            label_map_png=png(many_components(192, step=3))))),
        ("Generate", pb.GenerateRequest(plane="TV", preset="absent_csp",
                                        reference_png=bomb(),
                                        reference_label_map_png=LABELS_32)),
        ("Generate", pb.GenerateRequest(plane="TV", edits=[pb.Edit(json="[" * 5000)])),
    ]
    done = threading.Event()
    codes: list[grpc.StatusCode] = []

    def attack(i: int) -> None:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.FetalFlexStub(ch)
            while not done.is_set():
                method, req = hostile[i % len(hostile)]
                codes.append(_status(getattr(stub, method), req)[0])
                i += 1

    latencies: list[float] = []
    with ThreadPoolExecutor(4) as pool, grpc.insecure_channel(server.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        attackers = [pool.submit(attack, i) for i in range(4)]
        t_end = time.monotonic() + 8
        while time.monotonic() < t_end:
            t0 = time.perf_counter()
            r = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            latencies.append(time.perf_counter() - t0)
            assert r.status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(0.02)
        done.set()
        for a in attackers:
            a.result(timeout=120)
    lat = np.array(latencies)
    print(f"\nhealth probes: n={lat.size} p50={np.percentile(lat, 50) * 1e3:.1f} ms "
          f"p99={np.percentile(lat, 99) * 1e3:.1f} ms max={lat.max() * 1e3:.1f} ms; "
          f"hostile requests answered: {len(codes)} "
          f"({sorted({c.name for c in codes})})")
    assert lat.max() < 2.0
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                          grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert grpc.StatusCode.INVALID_ARGUMENT in codes


# ---------------------------------------------------------------- shutdown

def test_shutdown_with_work_in_flight_logs_cleanly(tiny_weights: Path, tmp_path: Path) -> None:
    """SIGTERM while a generation and a stream run past the grace period: both end
    CANCELLED with one access line each, and nothing else is logged: no tracebacks."""
    import inspect
    import json
    import signal
    import subprocess
    import sys

    from export.triton_server import free_port

    if "drained" not in inspect.getsource(Server.stop):
        pytest.xfail("service/server.py: Server.stop() must `await self.servicer.drained()` "
                     "after the gRPC server's stop and before the backend is closed")
    port = free_port()
    (tmp_path / "cfg.json").write_text(json.dumps({
        "port": port, "metrics_port": 0, "weights": str(tiny_weights), "grace_s": 0.5,
        "max_steps": 1000}))
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FETALFLEX_CACHE": str(tmp_path / "c")}
    p = subprocess.Popen([sys.executable, "-m", "fetalflex.cli", "serve", "--config",
                          str(tmp_path / "cfg.json")], stdout=log.open("w"),
                         stderr=subprocess.STDOUT, env=env)
    try:
        _wait(lambda: "serving on port" in log.read_text() or p.poll() is not None, 90)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb_grpc.FetalFlexStub(ch)
            unary = stub.Generate.future(pb.GenerateRequest(plane="TV", steps=1000))
            stream = stub.GenerateStream(pb.GenerateRequest(plane="TV", steps=1000))
            next(stream)
            time.sleep(0.3)
            p.send_signal(signal.SIGTERM)
            assert p.wait(60) == 0
            with pytest.raises(grpc.RpcError):
                unary.result(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text and "never retrieved" not in text
    assert "rpc method=Generate code=CANCELLED" in text
    assert "rpc method=GenerateStream code=CANCELLED" in text
