"""Start a training run from existing weights (fine-tuning), growing the condition if needed.

The shipped v3 denoiser has no appearance in its condition vector; a real-appearance model
adds one-hot appearance columns after GA. The only tensors whose shape depends on the
condition are the two class-embedding projections (UNet and ControlNet: ``linear_1`` of
``class_embedding``) and, when the condition is also fed to the anatomy encoder as constant
channels (``condition_channels``), that encoder's first convolution. Their old input
columns / channels are copied and the new ones start at zero, so the grown network computes
exactly what the old weights did whatever appearance is asked, and training teaches the new
columns what each appearance (and, through the encoder, each plane) means.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser

# Tensors whose dim 1 (inputs) may grow; new inputs always come after the old ones.
_GROWABLE = ("class_embedding.linear_1.weight", "controlnet_cond_embedding.conv_in.weight")


def _compatible(old: DenoiserConfig, new: DenoiserConfig) -> None:
    keep = {"appearances", "condition_channels", "sampling"}
    a = old.model_dump(exclude=keep)
    b = new.model_dump(exclude=keep)
    diff = sorted(k for k in a if a[k] != b[k])
    if diff:
        raise ValueError(f"init_weights: the weights' architecture differs from the config's "
                         f"model in {', '.join(diff)}; fine-tuning keeps the architecture "
                         f"(only appearances may be added)")
    if old.condition_channels and not new.condition_channels:
        raise ValueError("init_weights: the weights feed the condition to the anatomy encoder "
                         "(condition_channels); the config's model must too")
    if tuple(new.appearances[:len(old.appearances)]) != tuple(old.appearances):
        raise ValueError(f"init_weights: the config's appearances {list(new.appearances)} "
                         f"must start with the weights' {list(old.appearances)}")


def load_initial(model: FetalFlexDenoiser, directory: Path) -> dict[str, int]:
    """Copy the weights in ``directory`` into ``model`` (whose config may add appearances);
    returns how many tensors were copied whole and how many grown."""
    cfg_path, w_path = directory / "config.json", directory / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ValueError(f"init_weights: {p} not found (a weights folder holds "
                             f"config.json and model.safetensors)")
    old = DenoiserConfig.load(cfg_path)
    _compatible(old, model.config)
    state = load_file(str(w_path))
    own = model.state_dict()
    copied = grown = 0
    with torch.no_grad():
        for name, value in state.items():
            if name not in own:
                raise ValueError(f"init_weights: {directory} has a tensor {name} this "
                                 f"network lacks")
            target = own[name]
            if target.shape == value.shape:
                target.copy_(value)
                copied += 1
            elif (name.endswith(_GROWABLE) and target.shape[0] == value.shape[0]
                  and target.shape[2:] == value.shape[2:] and target.shape[1] > value.shape[1]):
                target.zero_()
                target[:, :value.shape[1]] = value
                grown += 1
            else:
                raise ValueError(f"init_weights: {name} has shape {tuple(value.shape)} in "
                                 f"{directory}, {tuple(target.shape)} here")
    missing = set(own) - set(state)
    if missing:
        raise ValueError(f"init_weights: {directory} lacks {sorted(missing)[:3]}")
    return {"copied": copied, "grown": grown}
