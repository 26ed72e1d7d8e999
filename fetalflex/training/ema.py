"""Exponential moving average of weights (used for sampling)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow: dict[str, Tensor] = {k: v.detach().clone().float()
                                          for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up as in diffusers' EMAModel: decay grows from 0 towards self.decay.
        d = min(self.decay, (1 + step) / (10 + step))
        avg: list[Tensor] = []
        cur: list[Tensor] = []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                avg.append(self.shadow[k])
                cur.append(v.detach().float())
            else:
                self.shadow[k].copy_(v)
        # One fused kernel per group instead of two per tensor (hundreds of tensors).
        torch._foreach_mul_(avg, d)
        torch._foreach_add_(avg, cur, alpha=1 - d)

    @torch.no_grad()
    def resync(self, model: nn.Module) -> None:
        """Restart the average at the current weights (at a stage change)."""
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}
