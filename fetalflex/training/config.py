"""Training recipe configuration (JSON; unknown keys are rejected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fetalflex.model.config import DenoiserConfig


class StageConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int = Field(ge=0)
    lr: float = Field(default=2e-4, gt=0, le=1)
    warmup_steps: int = Field(default=100, ge=0)


class TrainConfig(BaseModel):
    """Three stages: ``base`` (UNet on images, plane/GA conditioned), ``prealign``
    (anatomy encoder regresses the frozen UNet's features of the clean image),
    ``control`` (ControlNet branch with the diffusion loss)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: DenoiserConfig = DenoiserConfig()
    base: StageConfig = StageConfig(steps=2000)
    prealign: StageConfig = StageConfig(steps=300, lr=1e-3, warmup_steps=20)
    control: StageConfig = StageConfig(steps=2000, lr=1e-4)
    pre_alignment: bool = True          # the switch compared in the benchmark
    train_base_in_control: bool = True  # also fine-tune the UNet in the control stage
    batch_size: int = Field(default=16, ge=1)
    weight_decay: float = 0.01
    ema_decay: float = Field(default=0.999, ge=0, lt=1)
    drop_layout_prob: float = Field(default=0.1, ge=0, le=1)  # classifier-free guidance
    drop_plane_prob: float = Field(default=0.1, ge=0, le=1)
    box_prob: float = Field(default=0.3, ge=0, le=1)          # structure-list rendering
    grad_clip: float = 1.0
    checkpoint_every: int = Field(default=500, ge=1)
    snapshot_every: int | None = Field(default=None, ge=1)  # EMA weights kept per step
    log_every: int = Field(default=20, ge=1)
    seed: int = 0
    num_workers: int = 0
    preload: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.model_validate(json.loads(path.read_text()))
