"""int8 embedded graph: quantized where it should be, deterministic, close to fp32, and
loadable through the backend seam (tiny model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from fetalflex.backends.onnx_model import onnx_for
from fetalflex.backends.quantize import FP32_NODES, calibration_feeds
from fetalflex.model.config import DenoiserConfig
from fetalflex.request import PRECISIONS


@pytest.fixture(scope="module")
def graphs(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory,
           ) -> tuple[Path, Path]:
    import os

    os.environ["FETALFLEX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return onnx_for(tiny_weights, "fp32"), onnx_for(tiny_weights, "int8")
    finally:
        del os.environ["FETALFLEX_CACHE"]


def _weight_dq_inputs(path: Path) -> set[str]:
    """Names of Conv nodes whose weight input comes from a DequantizeLinear."""
    g = onnx.load(str(path)).graph
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in g.node if n.op_type == "Conv" and n.input[1] in dq_out}


def test_every_conv_but_the_image_ones_is_int8(graphs: tuple[Path, Path]) -> None:
    fp32, int8 = graphs
    convs = {n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"}
    quantized = _weight_dq_inputs(int8)
    assert set(FP32_NODES) <= convs
    assert not quantized & set(FP32_NODES)
    # The optimizer may merge convolutions that compute the same thing (the tiny model's
    # anatomy branch starts as a copy of the UNet); every other one is int8.
    assert len(quantized) >= len(convs) - len(FP32_NODES) - 1
    assert _weight_dq_inputs(fp32) == set()


def test_int8_is_close_to_fp32_and_deterministic(graphs: tuple[Path, Path],
                                                 tiny_weights: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from fetalflex.backends.quantize import quantize_int8

    fp32, int8 = graphs
    cfg = DenoiserConfig.load(tiny_weights / "config.json")
    feeds = calibration_feeds(cfg, per_plane=1, timesteps=(150, 550))
    a = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    for f in feeds:
        ya, yb = a.run(None, f)[0], b.run(None, f)[0]
        assert np.corrcoef(ya.ravel(), yb.ravel())[0, 1] > 0.98
        assert not np.array_equal(ya, yb)  # it did change the arithmetic
    again = quantize_int8(fp32, tmp_path / "again.onnx", cfg)
    assert again.read_bytes() == int8.read_bytes()


def test_unknown_precision_names_the_field(tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="precision: 'bf8'"):
        onnx_for(tiny_weights, "bf8")  # type: ignore[arg-type]
    assert PRECISIONS == ("fp32", "int8", "bf16")
    # bf16 is a precision of the torch backend: no ONNX graph, a named error with the fix
    with pytest.raises(ValueError, match="precision: bf16 has no ONNX graph.*--backend torch"):
        onnx_for(tiny_weights, "bf16")
