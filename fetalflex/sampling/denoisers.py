"""Denoiser callables and the wrappers that adapt them (k-diffusion style).

A *model call* is the backend seam: ``(x_t, t, layout, cond, control_scale) -> output``,
batched, whatever runs the network (the PyTorch module, ONNX Runtime, Triton).
A *denoiser* is what samplers see: ``denoise(x_t, t) -> output``. Conditioning and
classifier-free guidance are wrappers that turn a model call into a denoiser; the
sampler loop never knows which backend runs or how conditioning is done.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from fetalflex.model.denoiser import CONDITION_EXTRA, FetalFlexDenoiser, drop_condition

Denoiser = Callable[[Tensor, Tensor], Tensor]


class ModelCall(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor: ...


def torch_model_call(model: FetalFlexDenoiser) -> ModelCall:
    """The training-time module as a model call (inference mode, its own device/dtype)."""
    model.eval()
    p = next(model.parameters())

    @torch.inference_mode()
    def call(x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
             control_scale: Tensor) -> Tensor:
        out = model(x_t.to(p.device, p.dtype), t.to(p.device), layout.to(p.device, p.dtype),
                    cond.to(p.device, p.dtype), control_scale.to(p.device, p.dtype))
        return out.float().cpu()

    return call


def conditioned(call: ModelCall, layout: Tensor, cond: Tensor,
                control_scale: float | Tensor = 1.0) -> Denoiser:
    """Fix the conditioning of a model call: the result is a plain denoiser."""
    n = layout.shape[0]
    scale = (control_scale if isinstance(control_scale, Tensor)
             else torch.full((n,), float(control_scale)))

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        return call(x_t, t, layout, cond, scale)

    return denoise


def guided(call: ModelCall, layout: Tensor, cond: Tensor, guidance: float | Tensor,
           control_scale: float | Tensor = 1.0) -> Denoiser:
    """Classifier-free guidance: conditional and unconditional halves in ONE batched call.

    out = out_u + w (out_c - out_u). The unconditional half is
    :func:`~fetalflex.model.denoiser.drop_condition` of the conditional one: exactly the input
    that training drops conditions to. ``guidance`` and ``control_scale`` may be per-sample
    tensors (N,), so the adaptive sampler can change them per sample. With a scalar
    guidance of 1 the result is the conditional output alone, so the unconditional half is
    not computed (half the cost of a step).
    """
    n = layout.shape[0]
    if not isinstance(guidance, Tensor) and float(guidance) == 1.0:
        return conditioned(call, layout, cond, control_scale)
    w = guidance if isinstance(guidance, Tensor) else torch.full((n,), float(guidance))
    cs = (control_scale if isinstance(control_scale, Tensor)
          else torch.full((n,), float(control_scale)))
    null_layout, null_cond, null_cs = drop_condition(
        layout, cond, cs, torch.ones(n, dtype=torch.bool), cond.shape[1] - CONDITION_EXTRA)
    layout2 = torch.cat([layout, null_layout])
    cond2 = torch.cat([cond, null_cond])
    cs2 = torch.cat([cs, null_cs])
    w4 = w.view(-1, 1, 1, 1)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        out = call(torch.cat([x_t, x_t]), torch.cat([t, t]), layout2, cond2, cs2)
        out_c, out_u = out[:n], out[n:]
        return out_u + w4 * (out_c - out_u)

    return denoise


class CountingCall:
    """A model call that counts how often the network runs (one batched call = 1)."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self.calls = 0

    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor:
        self.calls += 1
        return self.call(x_t, t, layout, cond, control_scale)
