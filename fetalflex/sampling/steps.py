"""Per-sample DDIM math (each sample may sit at its own timestep).

Notation (Song et al. 2021, eq. 12 with eta = 0): a_t = sqrt(alphas_cumprod[t]),
s_t = sqrt(1 - alphas_cumprod[t]); from the model output we get x0 and eps, then
x_{t'} = a_{t'} x0 + s_{t'} eps. Timestep -1 stands for "clean" (a = 1, s = 0).
Diffusers' schedulers take one scalar t per call; the repaint and adaptive samplers need
per-sample t within one batched denoiser call, hence this small module.
"""

from __future__ import annotations

import torch
from torch import Tensor


def coeffs(ac: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(a_t, s_t) shaped (N,1,1,1); t = -1 gives (1, 0)."""
    acp = torch.where(t >= 0, ac[t.clamp(min=0)], torch.ones_like(ac[0:1]).expand(t.shape))
    return acp.sqrt().view(-1, 1, 1, 1), (1 - acp).clamp(min=0).sqrt().view(-1, 1, 1, 1)


def split_output(out: Tensor, x_t: Tensor, t: Tensor, ac: Tensor, prediction_type: str,
                 clip: bool = True) -> tuple[Tensor, Tensor]:
    """Model output -> (x0, eps); x0 clipped to [-1, 1] and eps made consistent with it."""
    a, s = coeffs(ac, t)
    if prediction_type == "v_prediction":
        x0 = a * x_t - s * out
        eps = s * x_t + a * out
    else:
        eps = out
        x0 = (x_t - s * eps) / a
    if clip:
        x0 = x0.clamp(-1.0, 1.0)
        eps = _eps(x0, x_t, a, s)
    return x0, eps


def _eps(x0: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> Tensor:
    return (x_t - a * x0) / s.clamp(min=1e-8)


def ddim_move(x0: Tensor, eps: Tensor, ac: Tensor, t_to: Tensor) -> Tensor:
    """Deterministic DDIM: the point at level t_to on the line through x0 and eps."""
    a, s = coeffs(ac, t_to)
    return a * x0 + s * eps


def ddim_to(x0: Tensor, x_t: Tensor, t: Tensor, t_to: Tensor, ac: Tensor) -> Tensor:
    """Deterministic DDIM from ``x_t`` at ``t`` to ``t_to``, given the x0 estimate: the noise
    is the one ``x_t = a_t x0 + s_t eps`` implies, so a clipped x0 stays on the line."""
    a, s = coeffs(ac, t)
    return ddim_move(x0, _eps(x0, x_t, a, s), ac, t_to)


def renoise(x: Tensor, ac: Tensor, t_from: Tensor, t_to: Tensor, noise: Tensor) -> Tensor:
    """q(x_{t_to} | x_{t_from}) for t_to > t_from (forward diffusion between two levels)."""
    a_from, _ = coeffs(ac, t_from)
    a_to, _ = coeffs(ac, t_to)
    ratio = (a_to / a_from) ** 2
    return ratio.sqrt() * x + (1 - ratio).clamp(min=0).sqrt() * noise


def noise_to(x0: Tensor, ac: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    a, s = coeffs(ac, t)
    return a * x0 + s * noise


class SampleNoise:
    """Per-sample noise streams: sample i always draws from its own seeded generator, so
    a request gives the same image whether it runs alone or batched with others."""

    def __init__(self, seeds: list[int]) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, shape: tuple[int, ...] | torch.Size,
                 indices: list[int] | None = None) -> Tensor:
        idx = list(range(len(self.generators))) if indices is None else indices
        if shape[0] != len(idx):
            raise ValueError(f"noise: batch {shape[0]} != {len(idx)} selected samples")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=self.generators[i])
                            for i in idx])
