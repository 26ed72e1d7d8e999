"""Denoiser backends: one seam, several implementations.

A backend exposes ``call`` (a :class:`~fetalflex.sampling.denoisers.ModelCall`), the
model's config, and an id + content hash for provenance.

* ``embedded``: ONNX Runtime in-process on the CPU (the default).
* ``torch``: the training-time PyTorch module (reference, tests).
* ``triton``: Triton Inference Server (the export issue adds it on the same seam).
* ``auto``: whichever of the in-process engines ``fetalflex tune`` found fastest on this
  host among those whose quality is validated (``backends/tune.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fetalflex.backends.onnx_model import onnx_for, weights_hash
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.model.signature import DEFAULT_TRITON_MODEL, INPUT_NAMES, INPUTS
from fetalflex.request import (
    BACKEND_NAMES,
    DEFAULT_BACKEND,
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    DEVICES,
    Device,
    Precision,
    check_precision,
    require_one_of,
)
from fetalflex.sampling.denoisers import ModelCall, torch_model_call
from fetalflex.weights import DEFAULT_WEIGHTS


@dataclass
class Backend:
    name: str
    config: DenoiserConfig
    call: ModelCall
    model_id: str
    model_hash: str
    precision: Precision = DEFAULT_PRECISION  # arithmetic of the served graph (sidecars, metrics)
    device: str = DEFAULT_DEVICE


class OnnxModelCall:
    """ONNX Runtime session as a model call (inputs built from the signature)."""

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), opts,
                                            providers=["CPUExecutionProvider"])
        got = [i.name for i in self.session.get_inputs()]
        if got != list(INPUT_NAMES):
            raise ValueError(f"{onnx_path}: inputs {got} do not match the signature "
                             f"{list(INPUT_NAMES)}")

    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor:
        feeds = {spec.name: np.ascontiguousarray(v.detach().cpu().numpy(), dtype=spec.dtype)
                 for spec, v in zip(INPUTS, (x_t, t, layout, cond, control_scale), strict=True)}
        return torch.from_numpy(self.session.run(None, feeds)[0])


def int8_threads() -> int:
    """Intra-op threads of an int8 session when none are asked for: half the CPUs.

    Measured on the 2-core machine (batch-2 call, ms): int8 20 with one thread, 15-26 with
    two (its small quantized kernels scale unevenly), fp32 39 / 25. One thread per int8
    call is as fast for one request and leaves the other core to a concurrent one
    (``fetalflex bench e2e``)."""
    return max(1, (os.cpu_count() or 2) // 2)


def weights_dir(weights: Path | None) -> Path:
    """The weights folder to load (None: the shipped default), or a named error."""
    w = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if not (w / "config.json").is_file() or not (w / "model.safetensors").is_file():
        raise FileNotFoundError(f"weights: {w} must hold config.json and model.safetensors")
    return w


def load_backend(name: str = DEFAULT_BACKEND, weights: Path | None = None,
                 threads: int | None = None, triton_url: str | None = None,
                 triton_model: str = DEFAULT_TRITON_MODEL,
                 triton_shared_memory: bool = False,
                 precision: Precision = DEFAULT_PRECISION,
                 device: Device = DEFAULT_DEVICE) -> Backend:
    """``precision`` chooses the embedded graph (fp32, or int8: ``backends/quantize.py``);
    the torch and triton backends run what they were given, fp32 only here. ``device``
    places the torch backend's module (``cuda``: the GPU path, fp32 weights with cuDNN's
    default TF32 convolutions); the other backends choose their own hardware."""
    w = weights_dir(weights)
    check_precision(precision, name)
    require_one_of("device", device, DEVICES)
    if device != DEFAULT_DEVICE and name != "torch":
        raise ValueError(f"device: {device} needs the torch backend (got {name})")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for but torch sees no CUDA GPU")
    if name == "auto":  # the measured engine loads the weights itself
        from fetalflex.backends.tune import tuned_engine

        choice = tuned_engine(w)
        return load_backend(choice.backend, w, threads=choice.threads,
                            precision=choice.precision, device=choice.device)
    cfg = DenoiserConfig.load(w / "config.json")
    digest = weights_hash(w)
    if name == "torch":
        if threads:
            torch.set_num_threads(threads)
        call = torch_model_call(FetalFlexDenoiser.load(w).to(device),
                                bf16=precision == "bf16")
    elif name == "embedded":
        if threads is None and precision == "int8":
            threads = int8_threads()
        call = OnnxModelCall(onnx_for(w, precision), threads)
    elif name == "triton":
        from fetalflex.backends.triton import TritonModelCall

        if not triton_url:
            raise ValueError("triton_url: the triton backend needs the server's gRPC address")
        tc = TritonModelCall(triton_url, triton_model, shared_memory=triton_shared_memory)
        tc.check_ready()
        call = tc
    else:
        raise ValueError(f"backend: {name!r} is unknown ({', '.join(BACKEND_NAMES)})")
    return Backend(name, cfg, call, model_id=f"fetalflex-denoiser@{w.name}",
                   model_hash=digest, precision=precision, device=device)
