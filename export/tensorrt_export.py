"""``fetalflex export tensorrt``: ONNX -> TensorRT plan, built on the target GPU.

TensorRT plans are specific to the GPU model and TensorRT version, so the plan is built
at deploy time on the serving GPU (an init container in deploy/, before Triton starts),
never committed and never built inside a Triton model's ``initialize``.

One optimization profile per batch bucket: bucket edges ``(1, 8, 16, 32)`` give profiles
``[1..1 opt 1]``, ``[2..8 opt 8]``, ``[9..16 opt 16]``, ``[17..32 opt 32]`` for every
input (shapes from :mod:`fetalflex.model.signature`). fp16 by default. Parity against
ONNX Runtime is checked on random inputs after the build (needs CUDA torch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fetalflex.model.config import DenoiserConfig
from fetalflex.model.signature import INPUTS


@dataclass(frozen=True)
class Profile:
    min_batch: int
    opt_batch: int
    max_batch: int


def batch_profiles(buckets: tuple[int, ...]) -> list[Profile]:
    """Bucket upper edges (strictly increasing, >= 1) -> non-overlapping profiles."""
    if not buckets:
        raise ValueError("buckets: give at least one batch size")
    if any(b < 1 for b in buckets):
        raise ValueError(f"buckets: batch sizes must be >= 1, got {list(buckets)}")
    if list(buckets) != sorted(set(buckets)):
        raise ValueError(f"buckets: must be strictly increasing, got {list(buckets)}")
    out, lo = [], 1
    for b in buckets:
        out.append(Profile(lo, b, b))
        lo = b + 1
    return out


def input_shapes(cfg: DenoiserConfig, p: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape per input for one profile."""
    shapes = {}
    for spec in INPUTS:
        dims = spec.concrete(cfg)[1:]
        shapes[spec.name] = tuple((b, *dims) for b in (p.min_batch, p.opt_batch, p.max_batch))
    return shapes


def build_plan(onnx_path: Path, out: Path, cfg: DenoiserConfig,
               buckets: tuple[int, ...] = (1, 8, 16, 32), fp16: bool = True,
               workspace_gib: float = 4.0) -> dict[str, Any]:
    profiles = batch_profiles(buckets)  # validate before touching the GPU stack
    if not onnx_path.is_file():
        raise FileNotFoundError(f"onnx: {onnx_path} not found")
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError("tensorrt: the tensorrt package is not installed; build plans on "
                           "the serving GPU (deploy/ init step)") from None
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("tensorrt: no CUDA GPU visible; plans are built on the target GPU")
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"tensorrt: cannot parse {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    for p in profiles:
        prof = builder.create_optimization_profile()
        for name, (mn, op, mx) in input_shapes(cfg, p).items():
            prof.set_shape(name, mn, op, mx)
        config.add_optimization_profile(prof)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("tensorrt: engine build failed (see the TensorRT log above)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(plan))
    return {"plan": str(out), "bytes": out.stat().st_size, "fp16": fp16,
            "profiles": [p.__dict__ for p in profiles],
            "build_seconds": round(time.perf_counter() - t0, 1),
            "tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(0)}


def trtexec_command(onnx_path: str, plan_path: str, cfg: DenoiserConfig,
                    max_batch: int = 32, opt_batch: int = 16, fp16: bool = True) -> list[str]:
    """A ``trtexec`` build with ONE profile (1..max_batch, tuned at opt_batch), for images
    that carry trtexec but not the tensorrt Python package (NGC's Triton image). The
    Python builder above makes one profile per bucket instead."""
    if not 1 <= opt_batch <= max_batch:
        raise ValueError(f"opt_batch: must be within 1..{max_batch}, got {opt_batch}")
    shapes = input_shapes(cfg, Profile(1, opt_batch, max_batch))
    cmd = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={plan_path}", "--skipInference"]
    if fp16:
        cmd.append("--fp16")
    for flag, k in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
        cmd.append(flag + "=" + ",".join(f"{name}:{'x'.join(str(d) for d in dims[k])}"
                                         for name, dims in shapes.items()))
    return cmd
