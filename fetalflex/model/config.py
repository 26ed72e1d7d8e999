"""Denoiser configuration: the config is the constructor (unknown keys are rejected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.structures import NUM_LABELS


class DenoiserConfig(BaseModel):
    """Architecture and diffusion parameterization of the FetalFlex denoiser."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = Field(default=128, ge=32, le=1024)
    in_channels: int = 1
    num_labels: int = NUM_LABELS
    num_planes: int = len(PLANE_CODES)
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    layers_per_block: int = Field(default=1, ge=1, le=4)
    norm_num_groups: int = 8
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    attention_head_dim: int = 32
    cond_embedding_channels: int = 32  # one level: the anatomy encoder stays at full res
    prediction_type: Literal["v_prediction", "epsilon"] = "v_prediction"
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear"] = "squaredcos_cap_v2"
    num_train_timesteps: int = 1000

    @model_validator(mode="after")
    def _consistent(self) -> DenoiserConfig:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels: needs one flag per entry of block_out_channels")
        if self.image_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError("image_size: must be divisible by 2^(levels-1)")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("block_out_channels: each must be divisible by norm_num_groups")
        return self

    @property
    def cond_dim(self) -> int:
        """Plane one-hot + null flag + (GA, GA-known flag)."""
        return self.num_planes + 1 + 2

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> DenoiserConfig:
        return cls.model_validate(json.loads(path.read_text()))
