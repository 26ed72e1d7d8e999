"""What the machine under us can do fast (checked, not assumed: the machine type varies)."""

from __future__ import annotations

import torch


def bf16_native() -> bool:
    """Whether this CPU runs bfloat16 natively (AVX-512 BF16 / AMX): autocast pays there.
    Without it, bf16 autocast on a CPU is emulated and slower than fp32."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_bf16(requested: str, device: torch.device) -> bool:
    """``requested`` "bf16", "fp32" or "auto" (bf16 on CUDA and on CPUs with native bf16)."""
    if requested == "auto":
        return device.type == "cuda" or bf16_native()
    return requested == "bf16"
