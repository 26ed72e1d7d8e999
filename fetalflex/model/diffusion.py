"""Forward diffusion and parameterization helpers (v-prediction), from diffusers' DDPM math.

Notation (Ho et al. 2020; Salimans & Ho 2022): alpha_t = sqrt(alphas_cumprod[t]),
sigma_t = sqrt(1 - alphas_cumprod[t]); x_t = alpha_t x0 + sigma_t eps;
v = alpha_t eps - sigma_t x0; x0 = alpha_t x_t - sigma_t v; eps = sigma_t x_t + alpha_t v.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler
from torch import Tensor

from fetalflex.model.config import DenoiserConfig


def train_scheduler(cfg: DenoiserConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                         beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type,
                         clip_sample=False)


def alphas_sigmas(alphas_cumprod: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    ac = alphas_cumprod.to(t.device)[t].float()
    return ac.sqrt()[:, None, None, None], (1 - ac).sqrt()[:, None, None, None]


def add_noise(alphas_cumprod: Tensor, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    a, s = alphas_sigmas(alphas_cumprod, t)
    return a * x0 + s * eps


def target(prediction_type: str, alphas_cumprod: Tensor, x0: Tensor, eps: Tensor,
           t: Tensor) -> Tensor:
    if prediction_type == "epsilon":
        return eps
    a, s = alphas_sigmas(alphas_cumprod, t)
    return a * eps - s * x0


def loss_weight(prediction_type: str, alphas_cumprod: Tensor, t: Tensor,
                gamma: float, plus_one: bool = False) -> Tensor:
    """Min-SNR-gamma weight per sample (Hang et al. 2023), SNR = alpha_t^2 / sigma_t^2.

    For an epsilon target the x0-space weight min(SNR, gamma) becomes min(SNR, gamma)/SNR;
    for a v target (whose error is (SNR + 1) times the x0 error / SNR) min(SNR, gamma)/(SNR+1).

    ``plus_one``: the x0-space weight is min(SNR + 1, gamma) instead. Plain min-SNR weighs
    the x0 error at the noisiest steps by SNR, about 0 near t = T: the model's clean-image
    estimate from pure noise, which sets a sample's overall brightness, is left untrained
    (the v4/v5 real-appearance weights guessed 61 grey for abdomen scans whose mean is 50).
    With + 1 those steps weigh 1, as under a plain v loss; low-noise steps stay capped.
    """
    ac = alphas_cumprod.to(t.device)[t].float()
    snr = ac / (1 - ac).clamp(min=1e-8)
    clipped = (snr + 1).clamp(max=gamma) if plus_one else snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr.clamp(min=1e-8)
    return clipped / (snr + 1)


def predict_x0(prediction_type: str, alphas_cumprod: Tensor, x_t: Tensor, pred: Tensor,
               t: Tensor) -> Tensor:
    a, s = alphas_sigmas(alphas_cumprod, t)
    if prediction_type == "epsilon":
        return (x_t - s * pred) / a
    return a * x_t - s * pred


def alphas_cumprod_for(cfg: DenoiserConfig) -> Tensor:
    return train_scheduler(cfg).alphas_cumprod.clone()


__all__ = [
    "add_noise",
    "alphas_cumprod_for",
    "loss_weight",
    "predict_x0",
    "target",
    "torch",
    "train_scheduler",
]
