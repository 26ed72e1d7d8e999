"""Training recipe configuration (JSON; unknown keys are rejected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fetalflex.model.config import DenoiserConfig
from fetalflex.training.augment import AugmentConfig


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
    # Classifier-free guidance: share of samples trained on the unconditional input
    # (model.denoiser.drop_condition: no layout, no plane, no GA, control branch off).
    drop_condition_prob: float = Field(default=0.1, ge=0, le=1)
    # Loss weight per timestep: "uniform" (plain MSE on the prediction) or "min_snr"
    # (Hang et al. 2023: min(SNR, gamma) / (SNR + 1) for v-prediction, min(SNR, gamma) / SNR
    # for epsilon), which stops the easy low-noise steps from dominating the gradient;
    # "min_snr_plus_one" uses min(SNR + 1, gamma) as the x0-space weight, so the noisiest
    # steps (which set overall brightness) are not weighted ~0 (model/diffusion.loss_weight).
    loss_weighting: Literal["uniform", "min_snr", "min_snr_plus_one"] = "uniform"
    min_snr_gamma: float = Field(default=5.0, gt=0)
    # Autocast dtype of the forward pass ("bf16" uses AVX-512 bf16 on CPUs that have it and
    # tensor cores on GPUs; weights, optimizer and EMA stay fp32).
    # "auto": bf16 on CUDA and on CPUs with native bf16 (fetalflex/model/hardware.py), else fp32.
    precision: Literal["bf16", "fp32", "auto"] = "bf16"
    augment: AugmentConfig = AugmentConfig()
    box_prob: float = Field(default=0.3, ge=0, le=1)          # structure-list rendering
    grad_clip: float = 1.0
    checkpoint_every: int = Field(default=500, ge=1)
    snapshot_every: int | None = Field(default=None, ge=1)  # EMA weights kept per step
    log_every: int = Field(default=20, ge=1)
    seed: int = 0
    num_workers: int = 0
    preload: bool = True
    # "loader": a DataLoader over PhantomDataset items (one-hot layouts built on the host);
    # "resident": the preloaded set as uint8 tensors on the device, batches built there
    # (fetalflex/training/batches.py; what a GPU needs to be fed at batch 256).
    batching: Literal["loader", "resident"] = "loader"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Fine-tuning: start from these weights (a folder with config.json + model.safetensors,
    # e.g. the shipped denoiser) instead of a fresh network. A condition vector that grew
    # (appearances added) keeps the old columns and starts the new ones at zero, so the
    # network computes exactly what the old weights did for the old appearance.
    init_weights: str | None = None
    # Partial anatomy: the share of samples whose layout keeps only a random subset of its
    # structures, the rest set to "not labelled" (all-zero channels). Each such sample draws
    # its keep probability uniformly from ``partial_keep`` (0 to 1: from nothing labelled to
    # everything), so phantoms are also shown with as little anatomy as real scans have: the
    # look must then come from the appearance condition, not from how much is labelled, and
    # the model learns to fill in what a partial layout leaves out.
    partial_anatomy_prob: float = Field(default=0.0, ge=0, le=1)
    partial_keep: tuple[float, float] = (0.0, 1.0)
    # Draw weights per (appearance, plane) cell: count ** -plane_balance (training/balance.py;
    # 0 = the data's own shares, 1 = every cell equally often).
    plane_balance: float = Field(default=0.0, ge=0, le=1)
    # Learning-rate factor for the tensors that read the condition vector (both class
    # embeddings and the anatomy encoder's first convolution): a fine-tuned model must grow
    # a dependence on a plane or look that its old weights had learned to ignore.
    condition_lr_scale: float = Field(default=1.0, gt=0, le=100)

    @model_validator(mode="after")
    def _weighting_fits_the_target(self) -> TrainConfig:
        if (self.loss_weighting == "min_snr_plus_one"
                and self.model.prediction_type != "v_prediction"):
            # (SNR + 1) / SNR on an epsilon target: ~1e8 at the noisiest steps
            raise ValueError("loss_weighting: min_snr_plus_one needs model.prediction_type "
                             "v_prediction; use min_snr for an epsilon model")
        return self

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.model_validate(json.loads(path.read_text()))
