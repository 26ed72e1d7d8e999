"""The embedded backend's ONNX model: the fused denoiser as one graph (dynamic batch), fp32
or int8 (``--precision``), built on first use and cached by the weights' content hash.

The release exporter (fp16, parity reports) is ``export/onnx_export.py``; it builds on
``export_onnx`` here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import cast

import torch

from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser, condition_vector
from fetalflex.model.signature import DYNAMIC_AXES, INPUT_NAMES, OUTPUT_NAMES
from fetalflex.request import (
    DEFAULT_PRECISION,
    PRECISION_BACKENDS,
    PRECISIONS,
    Precision,
    require_one_of,
)

OPSET = 17


def example_inputs(cfg: DenoiserConfig, n: int = 2) -> tuple[torch.Tensor, ...]:
    s = cfg.image_size
    g = torch.Generator().manual_seed(0)
    layout = torch.zeros(n, cfg.num_labels, s, s)
    layout[:, 2] = 1.0
    return (torch.randn((n, 1, s, s), generator=g), torch.full((n,), 500, dtype=torch.long),
            layout, condition_vector(torch.zeros(n, dtype=torch.long), torch.full((n,), 25.0),
                                     cfg.num_planes, torch.zeros(n, dtype=torch.long),
                                     len(cfg.appearances)), torch.ones(n))


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    """Write ``path`` atomically (temporary file + rename). ``model`` has the denoiser's
    signature and a ``config`` (:class:`DenoiserConfig`) for the example inputs."""
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # diffusers' shape asserts are constant for a fixed image size: harmless here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # nn.Module types its attributes Tensor | Module; ``config`` is the model's
            cfg = cast(DenoiserConfig, model.config)
            torch.onnx.export(model, example_inputs(cfg), tmp, dynamo=False,
                              input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                              dynamic_axes=DYNAMIC_AXES, opset_version=OPSET)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def weights_hash(weights_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update((weights_dir / name).read_bytes())
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("FETALFLEX_CACHE", Path.home() / ".cache" / "fetalflex"))


def onnx_for(weights_dir: Path, precision: Precision = DEFAULT_PRECISION) -> Path:
    """The ONNX file for these weights and precision, built on first use and cached by the
    weights' content hash: fp32 is exported from the module; int8 is quantized from the
    fp32 graph (``fetalflex.backends.quantize``, about a minute on 2 cores)."""
    require_one_of("precision", precision, PRECISIONS)
    if "embedded" not in PRECISION_BACKENDS[precision]:
        raise ValueError(f"precision: {precision} has no ONNX graph (ONNX Runtime's CPU "
                         f"provider has no bf16 convolutions); run it with --backend torch")
    digest = weights_hash(weights_dir)[:16]
    path = cache_dir() / f"denoiser-{digest}-{precision}.onnx"
    if path.exists():
        return path
    if precision == "fp32":
        return export_onnx(FetalFlexDenoiser.load(weights_dir), path)
    from fetalflex.backends.quantize import quantize_int8

    return quantize_int8(onnx_for(weights_dir, "fp32"), path,
                         DenoiserConfig.load(weights_dir / "config.json"))
