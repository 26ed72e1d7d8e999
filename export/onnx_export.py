"""``fetalflex export onnx``: the fused denoiser as ONNX, fp32 and fp16, with checks.

For each precision the exporter writes ``denoiser-<precision>.onnx`` and verifies it:

* ``onnx.checker`` passes;
* the batch axis is symbolic in the graph AND the model runs at batch 1 and batch 7;
* parity against the PyTorch module on fresh random inputs (never NaN; relative error
  ``max|onnx - torch| / max|torch|`` at most 1e-4 for fp32 and 1e-2 for fp16).

fp16 keeps fp32 inputs and outputs (casts inside the graph), so every client and Triton
config uses the one signature of :mod:`fetalflex.model.signature`.
A JSON report (sizes, export seconds, parity) is written beside the models.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import torch

from fetalflex.backends.onnx_model import export_onnx, weights_hash
from fetalflex.model.denoiser import FetalFlexDenoiser, condition_vector
from fetalflex.model.signature import INPUT_NAMES, INPUTS, OUTPUT_NAMES

Precision = Literal["fp32", "fp16"]
TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2}


class ParityError(RuntimeError):
    pass


def random_inputs(model: FetalFlexDenoiser, n: int, seed: int) -> dict[str, np.ndarray]:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    labels = torch.randint(0, cfg.num_labels, (n, s, s), generator=g)
    layout = torch.nn.functional.one_hot(labels, cfg.num_labels).permute(0, 3, 1, 2).float()
    planes = torch.randint(-1, cfg.num_planes, (n,), generator=g)
    ga = torch.rand(n, generator=g) * 14 + 18
    vals = (torch.randn((n, 1, s, s), generator=g),
            torch.randint(0, cfg.num_train_timesteps, (n,), generator=g), layout,
            condition_vector(planes, ga, cfg.num_planes,
                             torch.randint(0, max(len(cfg.appearances), 1), (n,), generator=g),
                             len(cfg.appearances)), torch.rand(n, generator=g) * 1.5)
    return {spec.name: v.numpy().astype(spec.dtype) for spec, v in zip(INPUTS, vals, strict=True)}


class _Fp16Graph(torch.nn.Module):
    """fp16 weights and activations inside, the fp32 signature outside."""

    def __init__(self, model: FetalFlexDenoiser) -> None:
        super().__init__()
        self.model = model.half()
        self.config = model.config

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, layout: torch.Tensor,
                cond: torch.Tensor, control_scale: torch.Tensor) -> torch.Tensor:
        out = self.model(x_t.half(), t, layout.half(), cond.half(), control_scale.half())
        return out.float()


def export_fp16(model: FetalFlexDenoiser, dst: Path) -> Path:
    """Trace the half-precision module (casts at the edges) instead of converting the fp32
    graph: onnxconverter-common's converter left fp32 inputs wired into fp16 nodes here."""
    import copy

    return export_onnx(_Fp16Graph(copy.deepcopy(model)), dst)


def check_dynamic_batch(path: Path) -> None:
    m = onnx.load(str(path))
    for vi in [*m.graph.input, *m.graph.output]:
        d0 = vi.type.tensor_type.shape.dim[0]
        if d0.HasField("dim_value") or not d0.dim_param:
            raise ParityError(f"{path.name}: {vi.name} has a fixed batch axis "
                              f"({d0.dim_value}); expected a symbolic one")
    names_in = [i.name for i in m.graph.input]
    names_out = [o.name for o in m.graph.output]
    if names_in != list(INPUT_NAMES) or names_out != list(OUTPUT_NAMES):
        raise ParityError(f"{path.name}: tensor names {names_in} -> {names_out} differ from the "
                          f"signature {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)}")


def parity(model: FetalFlexDenoiser, path: Path, precision: str,
           batches: tuple[int, ...] = (1, 7), seed: int = 1234) -> dict[str, float]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: dict[str, float] = {}
    model.eval()
    for n in batches:
        feeds = random_inputs(model, n, seed + n)
        got = sess.run(None, feeds)[0]
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feeds[k]) for k in INPUT_NAMES)).numpy()
        if got.shape != ref.shape:
            raise ParityError(f"{path.name}: batch {n} gave shape {got.shape}, torch {ref.shape}")
        if not np.isfinite(got).all():
            raise ParityError(f"{path.name}: NaN or inf at batch {n}")
        rel = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-12))
        out[f"rel_err_batch{n}"] = rel
        if rel > TOLERANCE[precision]:
            raise ParityError(f"{path.name}: relative error {rel:.2e} at batch {n} exceeds "
                              f"{TOLERANCE[precision]:.0e} ({precision})")
    return out


def export_all(weights: Path, out: Path,
               precisions: tuple[Precision, ...] = ("fp32", "fp16")) -> dict[str, Any]:
    model = FetalFlexDenoiser.load(weights).eval()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"weights": str(weights), "weights_sha256": weights_hash(weights),
                              "opset": 17, "models": {}}
    t0 = time.perf_counter()
    fp32 = export_onnx(model, out / "denoiser-fp32.onnx")
    t_fp32 = time.perf_counter() - t0
    for prec in precisions:
        t1 = time.perf_counter()
        path = fp32 if prec == "fp32" else export_fp16(model, out / "denoiser-fp16.onnx")
        onnx.checker.check_model(str(path))
        check_dynamic_batch(path)
        seconds = (t_fp32 if prec == "fp32" else time.perf_counter() - t1)
        report["models"][prec] = {"file": path.name, "bytes": path.stat().st_size,
                                  "export_seconds": round(seconds, 2),
                                  **parity(model, path, prec)}
    if "fp32" not in precisions:
        fp32.unlink()
    (out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
