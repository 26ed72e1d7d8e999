"""Against a REAL Triton Inference Server (nvidia-pytriton's tritonserver, CPU, loopback)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from export.triton_repository import write_repository
from export.triton_server import LocalTriton, metric_sum
from fetalflex.backends.backends import load_backend
from fetalflex.backends.onnx_model import export_onnx
from fetalflex.backends.triton import TritonUnavailableError, request_deadline
from fetalflex.generation import Engine, GenerationRequest
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.signature import DEFAULT_TRITON_MODEL
from tests.conftest import triton_env_path

MODEL = DEFAULT_TRITON_MODEL


@pytest.fixture(scope="module")
def triton(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    env = triton_env_path()
    tmp = tmp_path_factory.mktemp("triton")
    onnx = export_onnx(FetalFlexDenoiser.load(tiny_weights), tmp / "d.onnx")
    write_repository(tmp / "repo", DenoiserConfig.load(tiny_weights / "config.json"), onnx)
    server = LocalTriton(tmp / "repo", env, workdir=tmp / "work").start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_generation_through_triton_matches_embedded(triton: LocalTriton,
                                                    tiny_weights: Path) -> None:
    req = GenerationRequest(plane="TV", seed=3, steps=6, preset="absent_csp", pair=True,
                            repaint={"steps": 4, "jump_length": 2})
    a = Engine(load_backend("triton", tiny_weights, triton_url=triton.grpc_url)).run(req)
    b = Engine(load_backend("embedded", tiny_weights)).run(req)
    for x, y in ((a.samples[0].image, b.samples[0].image),
                 (a.samples[0].abnormal_image, b.samples[0].abnormal_image)):
        diff = np.abs(x.astype(int) - y.astype(int))  # type: ignore[union-attr]
        assert diff.max() <= 2 and diff.mean() < 0.05  # same ONNX model, float rounding only


def test_system_shared_memory_path(triton: LocalTriton, tiny_weights: Path) -> None:
    req = GenerationRequest(plane="FL", seed=9, steps=5)
    plain = Engine(load_backend("triton", tiny_weights, triton_url=triton.grpc_url)).run(req)
    b = load_backend("triton", tiny_weights, triton_url=triton.grpc_url,
                     triton_shared_memory=True)
    try:
        shm = Engine(b).run(req)
    finally:
        b.call.close()  # type: ignore[attr-defined]
    assert np.array_equal(plain.samples[0].image, shm.samples[0].image)


def test_dynamic_batcher_merges_concurrent_generations(triton: LocalTriton,
                                                       tiny_weights: Path) -> None:
    before = triton.metrics()
    n0 = metric_sum(before, "nv_inference_count", MODEL)
    e0 = metric_sum(before, "nv_inference_exec_count", MODEL)
    backend = load_backend("triton", tiny_weights, triton_url=triton.grpc_url)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            Engine(backend).run(GenerationRequest(plane="AC", seed=i, steps=8))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    ths = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors
    want = 8 * 8 * 2  # 8 generations x 8 steps x (cond + uncond) rows
    # Triton counts an execution when its statistics are recorded, which can trail the
    # response by a moment: read the counters until they stop moving (at most 10 s).
    deadline = time.monotonic() + 10
    while True:
        after = triton.metrics()
        count = metric_sum(after, "nv_inference_count", MODEL) - n0
        if count >= want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    execs = metric_sum(after, "nv_inference_exec_count", MODEL) - e0
    assert count == want
    assert execs < count


def test_kill_gives_unavailable_fast_and_restart_recovers(triton: LocalTriton,
                                                          tiny_weights: Path) -> None:
    backend = load_backend("triton", tiny_weights, triton_url=triton.grpc_url)
    engine = Engine(backend)
    calls = {"n": 0}
    real_call = backend.call

    def slow_call(*a):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            triton.kill()
            calls["killed_at"] = time.monotonic()
        return real_call(*a)

    backend.call = slow_call  # type: ignore[assignment]
    with pytest.raises(TritonUnavailableError, match="unavailable"):
        engine.run(GenerationRequest(plane="FL", steps=10))
    assert time.monotonic() - calls["killed_at"] < 1.5
    triton.start()
    backend.call = real_call
    with request_deadline(60):
        res = engine.run(GenerationRequest(plane="FL", steps=4))
    assert res.denoiser_calls == 4


def test_calls_above_the_models_max_batch_go_in_chunks(triton: LocalTriton,
                                                       tiny_weights: Path) -> None:
    """A generation's call can exceed the served max_batch_size (plane contrast: 3 rows per
    image): the client sends it as several calls, in order, with the same result."""
    import torch

    from fetalflex.backends.onnx_model import example_inputs
    from fetalflex.model.signature import TRITON_MAX_BATCH

    cfg = DenoiserConfig.load(tiny_weights / "config.json")
    n = TRITON_MAX_BATCH + 7
    inputs = list(example_inputs(cfg, n))
    inputs[0] = inputs[0] + torch.linspace(-1, 1, n).view(n, 1, 1, 1)  # rows differ
    served = load_backend("triton", tiny_weights, triton_url=triton.grpc_url)
    before = metric_sum(triton.metrics(), "nv_inference_request_success", MODEL)
    out = served.call(*inputs)
    after = metric_sum(triton.metrics(), "nv_inference_request_success", MODEL)
    assert after - before == 2  # 32 + 7 rows
    local = load_backend("embedded", tiny_weights).call(*inputs)
    assert out.shape[0] == n
    assert np.abs(out.numpy() - local.numpy()).max() < 1e-3
