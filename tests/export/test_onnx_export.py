from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from export.onnx_export import ParityError, check_dynamic_batch, export_all
from fetalflex.model.signature import INPUT_NAMES


def test_export_fp32_fp16_with_parity(tiny_weights: Path, tmp_path: Path) -> None:
    rep = export_all(tiny_weights, tmp_path)
    assert set(rep["models"]) == {"fp32", "fp16"}
    assert rep["models"]["fp32"]["rel_err_batch7"] <= 1e-4
    assert rep["models"]["fp16"]["rel_err_batch7"] <= 1e-2
    assert rep["models"]["fp16"]["bytes"] < rep["models"]["fp32"]["bytes"]
    saved = json.loads((tmp_path / "export_report.json").read_text())
    assert saved["weights_sha256"] == rep["weights_sha256"]
    m = onnx.load(str(tmp_path / "denoiser-fp16.onnx"))
    assert [i.name for i in m.graph.input] == list(INPUT_NAMES)
    assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for i in m.graph.input)


def test_fixed_batch_axis_is_caught(tiny_weights: Path, tmp_path: Path) -> None:
    export_all(tiny_weights, tmp_path, ("fp32",))
    m = onnx.load(str(tmp_path / "denoiser-fp32.onnx"))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    bad = tmp_path / "fixed.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ParityError, match="x_t has a fixed batch axis"):
        check_dynamic_batch(bad)


def test_condition_channels_export_with_the_same_signature(tmp_path: Path) -> None:
    """A model that feeds its condition to the anatomy encoder (v5) exports to the same
    inputs (the broadcast happens inside the graph) and samples what PyTorch samples."""
    import numpy as np
    import torch

    from fetalflex.anatomy.layout import rasterize
    from fetalflex.anatomy.templates import sample_template
    from fetalflex.backends.backends import load_backend
    from fetalflex.generation import Engine
    from fetalflex.model.config import DenoiserConfig
    from fetalflex.model.denoiser import FetalFlexDenoiser
    from tests.conftest import TINY_MODEL

    torch.manual_seed(0)
    m = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real"),
                                         condition_channels=True))
    with torch.no_grad():
        m.anatomy_encoder.conv_in.weight.normal_(0, 0.3)  # type: ignore[union-attr]
    m.save(tmp_path / "w")
    rep = export_all(tmp_path / "w", tmp_path / "onnx", ("fp32",))
    assert rep["models"]["fp32"]["rel_err_batch7"] <= 1e-4
    onnx_model = onnx.load(str(tmp_path / "onnx" / "denoiser-fp32.onnx"))
    assert [i.name for i in onnx_model.graph.input] == list(INPUT_NAMES)
    lay = [rasterize(sample_template("TT", 1), 32)]
    got = [Engine(load_backend(kind, tmp_path / "w")).sample_layouts(lay, [3],
                                                                     appearance="real")[0]
           for kind in ("torch", "embedded")]
    assert np.abs(got[0].astype(int) - got[1].astype(int)).max() <= 1
