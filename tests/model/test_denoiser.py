from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser, condition_vector
from fetalflex.model.diffusion import add_noise, alphas_cumprod_for, predict_x0, target
from tests.conftest import TINY_MODEL


def _inputs(cfg: DenoiserConfig, n: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    s = cfg.image_size
    x = torch.randn((n, 1, s, s), generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    k = cfg.num_labels
    layout = torch.nn.functional.one_hot(torch.randint(0, k, (n, s, s), generator=g),
                                         k).permute(0, 3, 1, 2).float()
    cond = condition_vector(torch.tensor([0, 3, -1][:n]), torch.tensor([20.0, float("nan"),
                                                                          30.0][:n]), 7)
    return x, t, layout, cond, torch.ones(n)


def test_forward_shape_and_control_is_zero_initialised() -> None:
    cfg = DenoiserConfig(**TINY_MODEL)
    torch.manual_seed(0)
    m = FetalFlexDenoiser(cfg).eval()
    x, t, layout, cond, scale = _inputs(cfg)
    with torch.no_grad():
        out = m(x, t, layout, cond, scale)
        base = m.forward_base(x, t, cond)
    assert out.shape == x.shape
    # ControlNet's zero convolutions: before training, the anatomy branch adds nothing.
    assert torch.allclose(out, base, atol=1e-6)
    with torch.no_grad():
        for p in m.control.controlnet_down_blocks.parameters():
            p.add_(0.05)
        moved = m(x, t, layout, cond, scale)
        off = m(x, t, layout, cond, torch.zeros(3))
    assert not torch.allclose(moved, base, atol=1e-4)
    assert torch.allclose(off, base, atol=1e-6)  # control_scale 0 switches the branch off


def test_condition_vector() -> None:
    c = condition_vector(torch.tensor([2, -1]), torch.tensor([25.0, float("nan")]), 7)
    assert c.shape == (2, 10)
    assert c[0, 2] == 1 and c[0, 7] == 0 and c[0, 9] == 1
    assert c[1, 7] == 1 and c[1, 8] == 0 and c[1, 9] == 0


def test_config_rejects_unknown_keys_and_inconsistency() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        DenoiserConfig.model_validate({**TINY_MODEL, "guidance_scale": 7})
    with pytest.raises(ValidationError, match="attention_levels"):
        DenoiserConfig.model_validate({**TINY_MODEL, "attention_levels": [False]})


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = DenoiserConfig(**TINY_MODEL)
    m = FetalFlexDenoiser(cfg).eval()
    m.save(tmp_path / "w")
    m2 = FetalFlexDenoiser.load(tmp_path / "w").eval()
    x, t, layout, cond, scale = _inputs(cfg)
    with torch.no_grad():
        assert torch.equal(m(x, t, layout, cond, scale), m2(x, t, layout, cond, scale))


def test_v_prediction_algebra() -> None:
    cfg = DenoiserConfig(**TINY_MODEL)
    ac = alphas_cumprod_for(cfg)
    x0, eps = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 250, 600, 999])
    x_t = add_noise(ac, x0, eps, t)
    v = target("v_prediction", ac, x0, eps, t)
    assert torch.allclose(predict_x0("v_prediction", ac, x_t, v, t), x0, atol=1e-4)


def test_onnx_export_parity(tmp_path: Path) -> None:
    """The fused graph exports as one ONNX model and matches PyTorch (fp32)."""
    import numpy as np
    import onnxruntime as ort

    cfg = DenoiserConfig(**TINY_MODEL)
    torch.manual_seed(1)
    m = FetalFlexDenoiser(cfg).eval()
    with torch.no_grad():
        for p in m.control.controlnet_down_blocks.parameters():
            p.normal_(0, 0.05)
    x, t, layout, cond, scale = _inputs(cfg)
    path = tmp_path / "d.onnx"
    torch.onnx.export(m, (x, t, layout, cond, scale), str(path), dynamo=False,
                      input_names=["x_t", "t", "layout", "cond", "control_scale"],
                      output_names=["out"], opset_version=17,
                      dynamic_axes={k: {0: "n"} for k in
                                    ("x_t", "t", "layout", "cond", "control_scale", "out")})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"x_t": x.numpy(), "t": t.numpy(), "layout": layout.numpy(), "cond": cond.numpy(),
             "control_scale": scale.numpy()}
    got = sess.run(None, feeds)[0]
    with torch.no_grad():
        ref = m(x, t, layout, cond, scale).numpy()
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 1e-4


@pytest.mark.parametrize("patch", [2, 4])
def test_patchified_model_reads_full_resolution_layout(patch: int) -> None:
    cfg = DenoiserConfig(**{**TINY_MODEL, "patch_size": patch})
    assert cfg.unet_size == 32 // patch and cfg.unet_channels == patch * patch
    assert len(cfg.anatomy_encoder_channels) == patch.bit_length()
    torch.manual_seed(0)
    m = FetalFlexDenoiser(cfg).eval()
    x, t, layout, cond, scale = _inputs(cfg)
    assert m.unet.config.sample_size == 32 // patch
    # The anatomy encoder takes the full-resolution layout to the UNet's resolution.
    feats = m.anatomy_encoder(layout)
    assert feats.shape[-1] == 32 // patch
    with torch.no_grad():
        for p in [*m.control.controlnet_down_blocks.parameters(),
                  *m.anatomy_encoder.conv_out.parameters()]:
            p.normal_(0, 0.05)  # the zero-initialised convolutions, switched on
        out = m(x, t, layout, cond, scale)
        # One pixel of the layout changes the output (full-resolution reading).
        lay2 = layout.clone()
        lay2[:, :, 5, 5] = 0
        lay2[:, 3, 5, 5] = 1
        out2 = m(x, t, lay2, cond, scale)
    assert out.shape == x.shape
    assert not torch.allclose(out, out2)
    assert torch.equal(m.unpatchify(m.patchify(x)), x)


def test_patch_size_must_fit() -> None:
    with pytest.raises(ValidationError, match="power of two"):
        DenoiserConfig.model_validate({**TINY_MODEL, "patch_size": 3})
    with pytest.raises(ValidationError, match="divisible"):
        DenoiserConfig.model_validate({**TINY_MODEL, "image_size": 40, "patch_size": 8})
