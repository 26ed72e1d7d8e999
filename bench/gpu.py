"""GPU benchmark: PyTorch eager vs CUDA graphs vs torch.compile vs ONNX Runtime vs TensorRT.

Run it where a GPU is (``fetalflex bench gpu --out out/bench``); every variant that cannot
run here is listed with the reason instead of a number. Per variant and batch size: median
ms per denoiser call, rows/s, and the achieved fraction of the GPU's *measured* peak
(a large fp16/bf16 and fp32 matmul timed on the same GPU) for this model's FLOPs per call
(counted with ``torch.utils.flop_counter``). ``--device cpu`` runs the same code on the
CPU (eager and ONNX Runtime), which is how the tests exercise it without a GPU.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.denoiser_latency import flops_per_row
from bench.results import print_table, write_results
from fetalflex.backends.onnx_model import example_inputs, onnx_for
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.signature import INPUT_NAMES, OUTPUT_NAMES
from fetalflex.reports.figures import finish_pair, new_figure, save_figure
from fetalflex.weights import DEFAULT_WEIGHTS

Call = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]
VARIANTS = ("eager-fp32", "eager-fp16", "eager-bf16", "channels-last-fp16", "cuda-graph-fp16",
            "compile-fp16", "ort-cuda", "ort-tensorrt", "tensorrt")
# Variants measured against the fp32 matmul peak; every other one against the fp16 peak.
FP32_VARIANTS = ("eager-fp32", "ort-cpu")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], device: str, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measured_peak_tflops(device: str, dtype: torch.dtype, n: int | None = None,
                         reps: int = 10) -> float:
    """Dense matmul throughput on this device: the practical peak we compare against."""
    n = n or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = measure(lambda: a @ b, device, reps)
    return 2 * n**3 / t / 1e12


def _inputs(model: FetalFlexDenoiser, batch: int, device: str, dtype: torch.dtype
            ) -> tuple[torch.Tensor, ...]:
    ins = example_inputs(model.config, batch)
    return tuple(x.to(device, dtype) if x.is_floating_point() else x.to(device) for x in ins)


def _torch_variant(name: str, model: FetalFlexDenoiser, device: str
                   ) -> Callable[[int], Callable[[], Any]]:
    half = torch.float16 if device == "cuda" else torch.bfloat16
    dtype = {"eager-fp32": torch.float32, "eager-bf16": torch.bfloat16}.get(name, half)
    channels_last = name == "channels-last-fp16"
    m = FetalFlexDenoiser(model.config).to(device, dtype).eval()
    m.load_state_dict(model.state_dict())
    if channels_last:
        m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if name == "compile-fp16":
        # torch.compile returns a callable wrapper typed as a function, used as the module
        m = torch.compile(m, mode="max-autotune-no-cudagraphs")  # type: ignore[assignment]

    def make(batch: int) -> Callable[[], Any]:
        ins = _inputs(model, batch, device, dtype)
        if channels_last:
            ins = tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
                        for x in ins)
        if name == "cuda-graph-fp16":
            static = ins
            with torch.inference_mode():
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        m(*static)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    m(*static)
            return graph.replay

        def run() -> Any:
            with torch.inference_mode():
                return m(*ins)
        return run
    return make


def _ort_variant(name: str, model: FetalFlexDenoiser, weights: Path, device: str
                 ) -> Callable[[int], Callable[[], Any]]:
    import onnxruntime as ort

    by_variant: dict[str, list[Any]] = {
        "ort-cuda": ["CUDAExecutionProvider"],
        "ort-tensorrt": [("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
                         "CUDAExecutionProvider"],
        "ort-cpu": ["CPUExecutionProvider"]}
    providers = by_variant[name]
    avail = ort.get_available_providers()
    first = providers[0] if isinstance(providers[0], str) else providers[0][0]
    if first not in avail:
        raise RuntimeError(f"{first} not available (onnxruntime has {avail})")
    sess = ort.InferenceSession(str(onnx_for(weights)), providers=providers)

    def make(batch: int) -> Callable[[], Any]:
        feeds = {n: v.numpy() for n, v in zip(INPUT_NAMES,
                                              example_inputs(model.config, batch), strict=True)}
        if device != "cuda":
            return lambda: sess.run(list(OUTPUT_NAMES), feeds)
        # I/O binding keeps inputs and the output on the GPU: no host copies per call.
        binding = sess.io_binding()
        for n, v in feeds.items():
            binding.bind_ortvalue_input(n, ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0))
        binding.bind_output(OUTPUT_NAMES[0], "cuda")
        return lambda: sess.run_with_iobinding(binding)
    return make


def _tensorrt_variant(model: FetalFlexDenoiser, weights: Path, max_batch: int
                      ) -> Callable[[int], Callable[[], Any]]:
    import tempfile

    import tensorrt as trt

    from export.tensorrt_export import build_plan

    with tempfile.TemporaryDirectory() as d:
        plan = Path(d) / "model.plan"
        # One profile covering 1..max_batch (optimised for max_batch).
        build_plan(onnx_for(weights), plan, model.config, buckets=(max_batch,), fp16=True)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    ctx = engine.create_execution_context()

    def make(batch: int) -> Callable[[], Any]:
        ins = _inputs(model, batch, "cuda", torch.float32)
        out = torch.empty((batch, 1, model.config.image_size, model.config.image_size),
                          device="cuda", dtype=torch.float32)
        for name, t in zip(INPUT_NAMES, ins, strict=True):
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
        ctx.set_tensor_address(OUTPUT_NAMES[0], out.data_ptr())
        stream = torch.cuda.current_stream().cuda_stream
        return lambda: ctx.execute_async_v3(stream)
    return make


def bench_gpu(weights: Path | None, out: Path, batches: tuple[int, ...] = (1, 2, 8, 16, 32),
              reps: int = 20, device: str | None = None,
              variants: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    w = weights or DEFAULT_WEIGHTS
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch sees no GPU")
    model = FetalFlexDenoiser.load(w)
    flops = flops_per_row(model)
    half = torch.float16 if device == "cuda" else torch.bfloat16
    peak = {"fp32": measured_peak_tflops(device, torch.float32),
            "half": measured_peak_tflops(device, half)}
    names = variants or (VARIANTS if device == "cuda" else ("eager-fp32", "ort-cpu"))
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            if name.startswith("ort-"):
                make = _ort_variant(name, model, w, device)
            elif name == "tensorrt":
                if device != "cuda":
                    raise RuntimeError("TensorRT needs a CUDA GPU")
                make = _tensorrt_variant(model, w, max(batches))
            else:
                if name == "cuda-graph-fp16" and device != "cuda":
                    raise RuntimeError("CUDA graphs need a CUDA GPU")
                make = _torch_variant(name, model, device)
            for b in batches:
                t = measure(make(b), device, reps)
                ref = peak["fp32"] if name in FP32_VARIANTS else peak["half"]
                rows.append({"variant": name, "batch": b, "ms": round(t * 1e3, 3),
                             "rows_per_s": round(b / t, 1),
                             "tflops": round(flops * b / t / 1e12, 3),
                             "fraction_of_measured_peak": round(flops * b / t / 1e12 / ref, 4)})
        except Exception as exc:  # noqa: BLE001 - a missing runtime is a result
            skipped[name] = f"{type(exc).__name__}: {exc}"[:300]
            print(f"skipped {name}: {skipped[name]}", flush=True)
    print_table(rows)
    write_results(out, "gpu", rows, {"device": device, "flops_per_row": flops,
                                     "measured_peak_tflops": {k: round(v, 2)
                                                              for k, v in peak.items()},
                                     "skipped": skipped, "image_size": model.config.image_size})
    if rows:
        plot_gpu(rows, out / "gpu.png", device)
    return rows


def plot_gpu(rows: list[dict[str, Any]], path: Path, device: str) -> None:
    """Rows/s and fraction of peak per variant against batch (each variant against the
    measured matmul peak of its own precision: fp32 rows against the fp32 peak)."""
    fig, axes = new_figure(ncols=2, width=5, height=3.8)
    a0, a1 = axes[0]
    for v in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == v]
        b = np.array([r["batch"] for r in sel])
        a0.plot(b, [r["rows_per_s"] for r in sel], "o-", label=v)
        own = "fp32" if v in FP32_VARIANTS else "fp16/bf16"
        a1.plot(b, [r["fraction_of_measured_peak"] for r in sel], "o-",
                label=f"{v} (of the {own} peak)")
    finish_pair((a0, a1), "batch (rows per call)",
                ("rows per second", "fraction of its precision's matmul peak"),
                (f"Denoiser throughput ({device})",
                 "Achieved fraction of the measured matmul peak"))
    save_figure(fig, path, f"denoiser variants on {device}")
