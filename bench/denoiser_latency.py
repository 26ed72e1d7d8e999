"""Denoiser per-call latency and throughput vs batch size: PyTorch eager vs ONNX Runtime.

One model call is one denoiser step for ``batch`` rows (a guided step of n images is
2n rows: cond + uncond). Both backends run the same weights on the same inputs in one
process, measured alternately per batch size (``results.interleaved``). FLOPs per row
are counted once with ``torch.utils.flop_counter`` so the achieved GFLOP/s can be read
against the machine's peak.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.results import interleaved, print_table, write_results
from fetalflex.backends.backends import OnnxModelCall
from fetalflex.backends.onnx_model import example_inputs, onnx_for
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.reports.figures import finish_pair, new_figure, save_figure
from fetalflex.sampling.denoisers import torch_model_call
from fetalflex.weights import DEFAULT_WEIGHTS

BATCHES = (1, 2, 4, 8, 16, 32)


def flops_per_row(model: FetalFlexDenoiser) -> int:
    """Floating-point operations (2 per multiply-add) of one call at batch 1."""
    ins = example_inputs(model.config, 1)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(*ins)
    return int(fc.get_total_flops())


def bench_denoiser(weights: Path | None, out: Path, batches: tuple[int, ...] = BATCHES,
                   reps: int = 10, threads: int | None = None) -> list[dict[str, Any]]:
    w = weights or DEFAULT_WEIGHTS
    if threads:
        torch.set_num_threads(threads)
    model = FetalFlexDenoiser.load(w)
    eager = torch_model_call(model)
    ort = OnnxModelCall(onnx_for(w), threads)
    flops = flops_per_row(model)
    rows = []
    for b in batches:
        ins = example_inputs(model.config, b)
        med = interleaved({"torch": partial(eager, *ins), "onnxruntime": partial(ort, *ins)},
                          reps=reps)
        rows.append({
            "batch": b, "torch_ms": round(med["torch"] * 1e3, 2),
            "onnxruntime_ms": round(med["onnxruntime"] * 1e3, 2),
            "torch_rows_per_s": round(b / med["torch"], 1),
            "onnxruntime_rows_per_s": round(b / med["onnxruntime"], 1),
            "speedup_ort_over_torch": round(med["torch"] / med["onnxruntime"], 2),
            "ort_gflops_per_s": round(flops * b / med["onnxruntime"] / 1e9, 2),
        })
    print_table(rows)
    write_results(out, "denoiser_latency", rows,
                  {"image_size": model.config.image_size, "flops_per_row": flops,
                   "reps": reps, "weights": str(w)})
    _plot(rows, out / "denoiser_latency.png", model.config.image_size)
    return rows


def _plot(rows: list[dict[str, Any]], path: Path, size: int) -> None:
    fig, axes = new_figure(ncols=2, width=5, height=3.8)
    b = [r["batch"] for r in rows]
    a0, a1 = axes[0]
    for key, label in (("torch", "PyTorch eager"), ("onnxruntime", "ONNX Runtime")):
        a0.plot(b, [r[f"{key}_ms"] for r in rows], "o-", label=label)
        a1.plot(b, [r[f"{key}_rows_per_s"] for r in rows], "o-", label=label)
    a0.set_yscale("log")
    finish_pair((a0, a1), "batch (rows per call)", ("ms per call (median)", "rows per second"),
                (f"Denoiser call latency, {size}x{size}", "Denoiser throughput"), 8)
    save_figure(fig, path, "denoiser latency/throughput vs batch; torch eager vs ORT")
