"""Denoiser configuration: the config is the constructor (unknown keys are rejected)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.structures import NUM_LABELS
from fetalflex.appearance import Appearance
from fetalflex.io.tone import check_tone_curve
from fetalflex.request import GUIDANCE_MAX, STEPS_MAX, SamplerName


class SamplingDefaults(BaseModel):
    """The sampling a set of weights recommends: what a request that leaves ``steps``,
    ``guidance`` or ``sampler`` unset gets (``Engine.resolve``). Unset here: the request
    schema's defaults. ``guidance_by_appearance`` overrides ``guidance`` per look (a real
    appearance may need less guidance than the phantom one: guidance brightens it).
    ``guidance_below_t`` is not a request field: it is how these weights are sampled
    (every request, every sampler, twins included), so it travels with them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int | None = Field(default=None, ge=1, le=STEPS_MAX)
    guidance: float | None = Field(default=None, ge=0.0, le=GUIDANCE_MAX)
    sampler: SamplerName | None = None
    guidance_by_appearance: dict[Appearance, float] = Field(default_factory=dict)
    # Guidance only at timesteps below this: the noisiest steps run the conditional row
    # alone (sampling.denoisers.guided; they set overall brightness, not anatomy). None:
    # guidance at every step.
    guidance_below_t: int | None = Field(default=None, ge=1)
    # A distilled student (``fetalflex distill``): guidance is folded into the weights, so
    # samplers that pick their own guidance per phase (two-stage) run unguided, on the
    # weights' own ``steps`` (``TwoStageOptions.folded``), instead of guiding again.
    guidance_folded: bool = False
    # Per appearance, the grey-level curve applied to every image these weights sample
    # (``fetalflex.io.tone``): 256 output grey levels, one per input level, never
    # decreasing. A distilled student's calibration to its teacher's grey levels (``fetalflex
    # distill --calibrate``): a few-step regression leaves a faint haze where its teacher
    # writes black. Absent for an appearance: its images are not remapped.
    tone_curve: dict[Appearance, tuple[int, ...]] = Field(default_factory=dict)
    # Per appearance and plane: a curve that replaces the appearance's own for that plane
    # (``fetalflex calibrate-real``: real heads and abdomens need different grey maps).
    tone_curve_by_plane: dict[Appearance, dict[str, tuple[int, ...]]] = Field(
        default_factory=dict)
    # Plane-contrast guidance (``sampling.denoisers.guided``), per appearance and plane: a
    # plane with a weight w here also runs, inside the guidance interval, the same layout
    # under the mean condition of the other planes of its ``plane_contrast_groups`` group
    # and moves the output away from it, out += w (out_plane - out_others). Planes that
    # share a layout (real brain planes label only the skull, if that) then differ by
    # what the plane alone adds. One more denoiser row per guided step for those planes
    # only. Absent / 0: not used.
    plane_contrast: dict[Appearance, dict[str, float]] = Field(default_factory=dict)
    plane_contrast_groups: tuple[tuple[str, ...], ...] = (("TV", "TT", "TC"),)

    @model_validator(mode="after")
    def _bounded(self) -> SamplingDefaults:
        for look, g in self.guidance_by_appearance.items():
            if not 0.0 <= g <= GUIDANCE_MAX:
                raise ValueError(f"guidance_by_appearance.{look}: must be within "
                                 f"[0, {GUIDANCE_MAX}], got {g}")
        for look, curve in self.tone_curve.items():
            check_tone_curve(curve, f"sampling.tone_curve.{look}")
        for look, by_plane in self.tone_curve_by_plane.items():
            for plane, curve in by_plane.items():
                if plane not in PLANE_CODES:
                    raise ValueError(f"sampling.tone_curve_by_plane.{look}: unknown plane "
                                     f"{plane!r} (planes: {', '.join(PLANE_CODES)})")
                check_tone_curve(curve, f"sampling.tone_curve_by_plane.{look}.{plane}")
        seen: set[str] = set()
        for group in self.plane_contrast_groups:
            unknown = [p for p in group if p not in PLANE_CODES]
            if unknown or len(set(group)) < 2:
                raise ValueError(f"sampling.plane_contrast_groups: each group needs two or "
                                 f"more distinct planes of {', '.join(PLANE_CODES)}, got "
                                 f"{list(group)}")
            if seen & set(group):
                raise ValueError(f"sampling.plane_contrast_groups: {sorted(seen & set(group))} "
                                 f"in two groups (a plane contrasts with one group)")
            seen |= set(group)
        for look, weights in self.plane_contrast.items():
            for plane, w in weights.items():
                if plane not in seen:
                    raise ValueError(f"sampling.plane_contrast.{look}.{plane}: the plane is in "
                                     f"no plane_contrast_groups group (groups: "
                                     f"{[list(g) for g in self.plane_contrast_groups]})")
                if not 0.0 <= w <= GUIDANCE_MAX:
                    raise ValueError(f"sampling.plane_contrast.{look}.{plane}: must be within "
                                     f"[0, {GUIDANCE_MAX}], got {w}")
        return self

    def contrast_weight(self, appearance: str, plane: str) -> float:
        """The plane-contrast weight of ``plane`` in ``appearance`` (0: none)."""
        return float(self.plane_contrast.get(appearance, {}).get(plane, 0.0))  # type: ignore[call-overload]

    def contrast_record(self, appearance: str) -> dict[str, object]:
        """The plane contrast of ``appearance`` as a sampling record for results (empty
        where there is none, so records of weights without it keep their keys)."""
        weights = {p: w for p, w in self.plane_contrast.get(  # type: ignore[call-overload]
            appearance, {}).items() if w}
        if not weights:
            return {}
        return {"plane_contrast": weights,
                "plane_contrast_groups": [list(g) for g in self.plane_contrast_groups]}

    def contrast_planes(self, appearance: str, plane: str) -> tuple[str, ...]:
        """The planes ``plane`` is contrasted with in ``appearance`` (empty: none)."""
        if not self.contrast_weight(appearance, plane):
            return ()
        for group in self.plane_contrast_groups:
            if plane in group:
                return tuple(p for p in group if p != plane)
        return ()


class DenoiserConfig(BaseModel):
    """Architecture and diffusion parameterization of the FetalFlex denoiser."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image_size: int = Field(default=128, ge=32, le=1024)
    in_channels: int = 1
    # Space-to-depth factor around the UNet (1 = none). With 2, a 128^2 image enters the UNet
    # as 64^2 x 4 channels, so its most expensive level runs at a quarter of the pixels; the
    # anatomy encoder still reads the layout at full resolution and downsamples it itself.
    patch_size: int = Field(default=1, ge=1, le=8)
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
    # Appearances the condition vector chooses between (one-hot after GA); empty: the model
    # knows one look, the phantom's (v1-v3 weights).
    appearances: tuple[Appearance, ...] = ()
    # The condition vector (plane, GA, appearance) also enters the anatomy encoder as
    # constant channels after the layout's: a plane or a look then acts through every
    # skip connection of the control branch at full resolution, not only through the
    # time embedding (where v3/v4 learned to all but ignore it: the layout said it all).
    condition_channels: bool = False
    # What requests that leave steps / guidance / sampler unset get from these weights, and
    # the guidance interval every request is sampled with.
    sampling: SamplingDefaults = SamplingDefaults()

    @model_validator(mode="after")
    def _consistent(self) -> DenoiserConfig:
        if len(self.attention_levels) != len(self.block_out_channels):
            raise ValueError("attention_levels: needs one flag per entry of block_out_channels")
        if self.patch_size & (self.patch_size - 1):
            raise ValueError("patch_size: must be a power of two")
        if self.image_size % (self.patch_size * 2 ** (len(self.block_out_channels) - 1)):
            raise ValueError("image_size: must be divisible by patch_size * 2^(levels-1)")
        if len(set(self.appearances)) != len(self.appearances):
            raise ValueError("appearances: each may be listed once")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError("block_out_channels: each must be divisible by norm_num_groups")
        below = self.sampling.guidance_below_t
        if below is not None and below > self.num_train_timesteps:
            raise ValueError(f"sampling.guidance_below_t: must be <= num_train_timesteps "
                             f"({self.num_train_timesteps}), got {below}")
        return self

    @property
    def unet_size(self) -> int:
        """Side of the UNet's own input (the image after space-to-depth)."""
        return self.image_size // self.patch_size

    @property
    def unet_channels(self) -> int:
        return self.in_channels * self.patch_size ** 2

    @property
    def anatomy_encoder_channels(self) -> tuple[int, ...]:
        """One level per factor 2 of the patch: full resolution in, UNet resolution out."""
        levels = self.patch_size.bit_length()  # 1 -> 1 level, 2 -> 2, 4 -> 3
        return tuple(self.cond_embedding_channels * 2 ** i for i in range(levels))

    @property
    def control_input_channels(self) -> int:
        """Channels the anatomy encoder reads: the layout's, then the condition's if fed."""
        return self.num_labels + (self.cond_dim if self.condition_channels else 0)

    @property
    def cond_dim(self) -> int:
        """Plane one-hot + null flag + (GA, GA-known flag) + appearance one-hot."""
        return self.num_planes + 3 + len(self.appearances)

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> DenoiserConfig:
        return cls.model_validate(json.loads(path.read_text()))
