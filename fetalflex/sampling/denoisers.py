"""Denoiser callables and the wrappers that adapt them (k-diffusion style).

A *model call* is the backend seam: ``(x_t, t, layout, cond, control_scale) -> output``,
batched, whatever runs the network (the PyTorch module, ONNX Runtime, Triton).
A *denoiser* is what samplers see: ``denoise(x_t, t) -> output``. Conditioning and
classifier-free guidance are wrappers that turn a model call into a denoiser; the
sampler loop never knows which backend runs or how conditioning is done.

The model predicts v (or eps); samplers of our own want x0, and get it from
:func:`predicting_x0`, the one place that converts (diffusers' schedulers take the
model's own prediction, so DDIM and DPM-Solver++ are given the plain denoiser).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from fetalflex.anatomy.planes import plane_index
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import (
    CONDITION_EXTRA,
    FetalFlexDenoiser,
    drop_condition,
    with_planes_mixed,
)
from fetalflex.sampling.steps import split_output

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``(x_t, t) -> the model's prediction`` (v or eps, as the model was trained)."""

X0Denoiser = Callable[[Tensor, Tensor], Tensor]
"""``(x_t, t) -> x0``: the clean-image estimate, clipped to the image range."""

ToX0 = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(model output, x_t, t) -> x0``."""

Conditioning = Callable[[Tensor | None, float, float], Denoiser]
"""``(sample indices or None for all, guidance, control scale) -> denoiser``: a batch's
conditioning, from which a sampler makes the denoisers it needs (two-stage makes one per
stage and per group of samples)."""


class ModelCall(Protocol):
    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor: ...


def torch_model_call(model: FetalFlexDenoiser, bf16: bool = False) -> ModelCall:
    """The training-time module as a model call (inference mode, its own device/dtype).
    ``bf16``: under bf16 autocast with channels-last activations (fast only where the
    device computes bf16 natively: CUDA, CPUs with AVX-512 BF16 or AMX); fp32 weights and
    an fp32 result either way."""
    model.eval()
    p = next(model.parameters())
    if bf16:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @torch.inference_mode()
    def call(x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
             control_scale: Tensor) -> Tensor:
        with torch.autocast(p.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x_t.to(p.device, p.dtype), t.to(p.device),
                        layout.to(p.device, p.dtype), cond.to(p.device, p.dtype),
                        control_scale.to(p.device, p.dtype))
        return out.float().cpu()

    return call


def conditioned(call: ModelCall, layout: Tensor, cond: Tensor,
                control_scale: float | Tensor = 1.0) -> Denoiser:
    """Fix the conditioning of a model call: the result is a plain denoiser."""
    scale = _per_sample(control_scale, layout.shape[0])

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        return call(x_t, t, layout, cond, scale)

    return denoise


def guided(call: ModelCall, layout: Tensor, cond: Tensor, guidance: float | Tensor,
           control_scale: float | Tensor = 1.0, guidance_from_t: int = 0,
           guidance_below_t: int | None = None,
           contrast: tuple[Tensor, Tensor] | None = None) -> Denoiser:
    """Classifier-free guidance: conditional and unconditional halves in ONE batched call.

    out = out_u + w (out_c - out_u). The unconditional half is
    :func:`~fetalflex.model.denoiser.drop_condition` of the conditional one: exactly the input
    that training drops conditions to. ``guidance`` and ``control_scale`` may be per-sample
    tensors (N,), so the adaptive sampler can change them per sample. With a scalar
    guidance of 1 the result is the conditional output alone, so the unconditional half is
    not computed (half the cost of a step).

    Guidance interval: at steps whose timesteps are all below ``guidance_from_t`` the
    conditional output alone is used (one row per sample instead of two). Guidance shapes
    the anatomy at high noise; late, low-noise steps refine texture, where the conditional
    model alone suffices (after Kynkaanniemi et al., "Applying guidance in a limited
    interval improves sample and distribution quality", NeurIPS 2024). 0 = every step.
    ``guidance_below_t`` is the interval's other end: at steps whose timesteps are all at or
    above it (the noisiest) the conditional output alone is used too. There the
    unconditional row is a guess of the mean scan without a plane or anatomy, and
    extrapolating away from it moves a sample's overall brightness, not its anatomy (the
    same paper: guidance at high noise hurts). None = no upper end.

    ``contrast`` = (other_cond, w_p (N,)): plane-contrast guidance. Each step inside the
    guidance interval also runs the same layout under ``other_cond`` (the mean condition
    of the planes this one must not look like, ``SamplingDefaults.plane_contrast``) and
    adds w_p (out_c - out_other), in the same batched call (at guidance 1 too: then
    without the unconditional row). Classifier-free guidance extrapolates from "no
    anatomy, no plane"; this extrapolates from "this layout as the neighbouring planes",
    the difference the null row cannot isolate when the layout says nothing inside a
    head. Outside the interval neither runs (measured on v6: contrast at the pure-noise
    step too moved the planes' overall grey apart, TT 5 levels darker and TC 9 brighter
    at w_p 3, for about the same recognition).
    """
    n = layout.shape[0]
    if contrast is not None and bool((contrast[1] > 0).any()):
        return _contrast_guided(call, layout, cond, guidance, control_scale, guidance_from_t,
                                guidance_below_t, contrast[0], contrast[1])
    if not isinstance(guidance, Tensor) and float(guidance) == 1.0:
        return conditioned(call, layout, cond, control_scale)
    plain = conditioned(call, layout, cond, control_scale)
    w, cs = _per_sample(guidance, n), _per_sample(control_scale, n)
    null_layout, null_cond, null_cs = drop_condition(
        layout, cond, cs, torch.ones(n, dtype=torch.bool), cond.shape[1] - CONDITION_EXTRA)
    layout2 = torch.cat([layout, null_layout])
    cond2 = torch.cat([cond, null_cond])
    cs2 = torch.cat([cs, null_cs])
    w4 = w.view(-1, 1, 1, 1)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        if _outside_interval(t, guidance_from_t, guidance_below_t):
            return plain(x_t, t)
        out = call(torch.cat([x_t, x_t]), torch.cat([t, t]), layout2, cond2, cs2)
        out_c, out_u = out[:n], out[n:]
        return out_u + w4 * (out_c - out_u)

    return denoise


def _contrast_guided(call: ModelCall, layout: Tensor, cond: Tensor, guidance: float | Tensor,
                     control_scale: float | Tensor, guidance_from_t: int,
                     guidance_below_t: int | None, other: Tensor, weight: Tensor) -> Denoiser:
    """:func:`guided` with plane contrast: rows [conditional, other planes, unconditional]
    inside the guidance interval (no unconditional row at guidance 1), the conditional
    row alone outside it."""
    n = layout.shape[0]
    w, cs = _per_sample(guidance, n), _per_sample(control_scale, n)
    null_layout, null_cond, null_cs = drop_condition(
        layout, cond, cs, torch.ones(n, dtype=torch.bool), cond.shape[1] - CONDITION_EXTRA)
    no_cfg = not isinstance(guidance, Tensor) and float(guidance) == 1.0
    w4, wp4 = w.view(-1, 1, 1, 1), weight.view(-1, 1, 1, 1)
    lay2, cond2, cs2 = torch.cat([layout, layout]), torch.cat([cond, other]), torch.cat([cs, cs])
    lay3 = torch.cat([lay2, null_layout])
    cond3, cs3 = torch.cat([cond2, null_cond]), torch.cat([cs2, null_cs])

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        if _outside_interval(t, guidance_from_t, guidance_below_t):
            return call(x_t, t, layout, cond, cs)  # outside the interval: no guidance at all
        if no_cfg:
            out = call(torch.cat([x_t, x_t]), torch.cat([t, t]), lay2, cond2, cs2)
            out_c, out_o = out[:n], out[n:]
            return out_c + wp4 * (out_c - out_o)
        out = call(torch.cat([x_t, x_t, x_t]), torch.cat([t, t, t]), lay3, cond3, cs3)
        out_c, out_o, out_u = out[:n], out[n:2 * n], out[2 * n:]
        return out_u + w4 * (out_c - out_u) + wp4 * (out_c - out_o)

    return denoise


def _per_sample(value: float | Tensor, n: int) -> Tensor:
    """A guidance or control scale as one value per sample (N,)."""
    return value if isinstance(value, Tensor) else torch.full((n,), float(value))


def _outside_interval(t: Tensor, guidance_from_t: int, guidance_below_t: int | None) -> bool:
    """Whether every timestep of ``t`` lies outside the guidance interval
    ``[guidance_from_t, guidance_below_t)`` (0 / None: that end open)."""
    return ((guidance_from_t > 0 and bool((t < guidance_from_t).all()))
            or (guidance_below_t is not None and bool((t >= guidance_below_t).all())))


def contrast_conditions(cfg: DenoiserConfig, cond: Tensor, planes: list[str],
                        looks: list[str]) -> tuple[Tensor, Tensor] | None:
    """Plane-contrast guidance of weights ``cfg`` for rows of condition ``cond`` (row i:
    plane ``planes[i]``, appearance ``looks[i]``): each row's "other planes" condition
    and weight (0 where the row's plane or look has none), or None when no row has it."""
    others = [cfg.sampling.contrast_planes(look, plane)
              for plane, look in zip(planes, looks, strict=True)]
    if not any(others):
        return None
    other = with_planes_mixed(cond, [tuple(plane_index(p) for p in o) for o in others],
                              cfg.num_planes)
    weight = torch.tensor([cfg.sampling.contrast_weight(look, plane)
                           for plane, look in zip(planes, looks, strict=True)])
    return other, weight


def conditioning(call: ModelCall, layout: Tensor, cond: Tensor,
                 guidance_from_t: int = 0, guidance_below_t: int | None = None,
                 contrast: tuple[Tensor, Tensor] | None = None) -> Conditioning:
    """The guided denoisers of one batch (layouts and conditions of every sample), with
    guidance, and plane contrast when given, on the timesteps in
    ``[guidance_from_t, guidance_below_t)`` (see :func:`guided`)."""

    def make(indices: Tensor | None, guidance: float, control_scale: float) -> Denoiser:
        if indices is None:
            return guided(call, layout, cond, guidance, control_scale, guidance_from_t,
                          guidance_below_t, contrast)
        part = None if contrast is None else (contrast[0][indices], contrast[1][indices])
        return guided(call, layout[indices], cond[indices], guidance, control_scale,
                      guidance_from_t, guidance_below_t, part)

    return make


def to_x0(ac: Tensor, prediction_type: str) -> ToX0:
    """The model output -> x0 conversion of a noise schedule and parameterization."""

    def convert(out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return split_output(out, x_t, t, ac, prediction_type)[0]

    return convert


def predicting_x0(denoise: Denoiser, ac: Tensor, prediction_type: str) -> X0Denoiser:
    """``denoise`` as an x0 denoiser (k-diffusion's "denoised"): samplers step with x0
    and never convert the model's prediction themselves."""
    convert = to_x0(ac, prediction_type)

    def denoise_x0(x_t: Tensor, t: Tensor) -> Tensor:
        return convert(denoise(x_t, t), x_t, t)

    return denoise_x0


class CountingCall:
    """A model call that counts how often the network runs (one batched call = 1)."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self.calls = 0

    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor:
        self.calls += 1
        return self.call(x_t, t, layout, cond, control_scale)
