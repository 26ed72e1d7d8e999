"""The request schema: every default, limit and name of a generation, in one place.

Importable without torch (a test checks): the CLI builds its flags, choices and ``--help``
defaults from here; the gRPC translation leaves unset fields unset and lets
:class:`GenerationRequest` fill them; the service checks its ``max_*`` settings against
these bounds at start-up (``service/config.py``).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fetalflex.anatomy.biometry import GA_MAX, GA_MIN
from fetalflex.anatomy.compose import edit_list
from fetalflex.anatomy.edits import Edit
from fetalflex.anatomy.planes import canonical_code
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.presets import preset as get_preset
from fetalflex.appearance import APPEARANCES, Appearance
from fetalflex.errors import InvalidRequestError, field_errors

# ---------------------------------------------------------------- names
SamplerName = Literal["ddim", "dpmsolver++", "two-stage"]
SAMPLER_NAMES: Final[tuple[SamplerName, ...]] = get_args(SamplerName)
# DPM-Solver++ (2M) at 6 steps: 12 denoiser rows per guided image instead of DDIM-10's 20,
# with adherence, per-structure brightness and every anomaly twin as good or better on the
# v2 weights (docs/EVALUATION.md, "Fewer rows per image"); DDIM stays one flag away.
DEFAULT_SAMPLER: Final[SamplerName] = "dpmsolver++"

APPEARANCE_NAMES: Final[tuple[Appearance, ...]] = APPEARANCES

# Where the denoiser runs (``fetalflex.backends.backends.load_backend``). ``auto``: the
# engine ``fetalflex tune`` measured fastest on this host among the validated ones
# (``fetalflex/backends/tune.py``; measured on first use and cached per host and weights).
BackendName = Literal["embedded", "torch", "triton", "auto"]
BACKEND_NAMES: Final[tuple[BackendName, ...]] = get_args(BackendName)
IN_PROCESS_BACKENDS: Final[tuple[BackendName, ...]] = ("embedded", "torch", "auto")
DEFAULT_BACKEND: Final[BackendName] = "embedded"
# Device of the torch backend (the embedded graph and Triton choose their own hardware).
Device = Literal["cpu", "cuda"]
DEVICES: Final[tuple[Device, ...]] = get_args(Device)
DEFAULT_DEVICE: Final[Device] = "cpu"
# Arithmetic of the denoiser: fp32 (every backend); int8, the embedded backend's quantized
# graph (fetalflex/backends/quantize.py); bf16, the torch backend under bf16 autocast
# (CPUs with native bf16 -- AVX-512 BF16 or AMX -- and CUDA; ONNX Runtime's CPU provider
# has no bf16 convolutions). The one rule of which backend runs which: PRECISION_BACKENDS.
Precision = Literal["fp32", "int8", "bf16"]
PRECISIONS: Final[tuple[Precision, ...]] = get_args(Precision)
DEFAULT_PRECISION: Final[Precision] = "fp32"
PRECISION_BACKENDS: Final[dict[Precision, tuple[BackendName, ...]]] = {
    "fp32": ("embedded", "torch", "triton"), "int8": ("embedded",), "bf16": ("torch",)}


def check_precision(precision: str, backend: str) -> None:
    """The named error for a precision its backend cannot run (the one place it is said)."""
    require_one_of("precision", precision, PRECISIONS)
    runs = PRECISION_BACKENDS[precision]  # type: ignore[index]
    if backend != "auto" and backend not in runs:
        raise ValueError(f"precision: {precision} needs the {' or '.join(runs)} backend "
                         f"(got {backend}); pass --backend {runs[0]}")


def denoiser_rows(steps: int, guidance: float, guidance_below_t: int | None = None,
                  num_train_timesteps: int = 1000, contrast: bool = False) -> int:
    """Denoiser rows one plain image costs: each guided step runs a conditional and an
    unconditional row; at guidance 1 the conditional one only (``sampling.denoisers.guided``
    skips the other), and so do the steps at or above the weights' ``guidance_below_t`` on
    the samplers' trailing timestep grid (``sampling/ddim.py``, ``dpm_solver.py``).
    ``contrast``: the plane has plane-contrast guidance, one more row at every step inside
    the guidance interval (at guidance 1 too)."""
    if guidance_below_t is None:
        inside = steps
    else:
        grid = [round(num_train_timesteps - i * num_train_timesteps / steps) - 1
                for i in range(steps)]  # diffusers' "trailing" spacing
        inside = sum(t < guidance_below_t for t in grid)
    unconditional = 0 if float(guidance) == 1.0 else inside
    return steps + unconditional + (inside if contrast else 0)


def request_error(exc: ValidationError) -> InvalidRequestError:
    """A request's first validation error as the named error the API promises
    (``field: reason``), for callers of the Python API and the services."""
    return field_errors(exc)[0]


def require_one_of(field: str, value: object, names: tuple[str, ...]) -> None:
    """The one error for a value outside a set of names (precision, device, format...):
    ``<field>: '<value>' is not one of <names>``."""
    if value not in names:
        raise ValueError(f"{field}: {value!r} is not one of {', '.join(names)}")


# ---------------------------------------------------------------- defaults and limits
COUNT_MAX: Final = 64         # samples per request (the service's max_count may be lower)
SEED_LIMIT: Final = 2**31     # seeds are 0 .. SEED_LIMIT - 1
# 6 with the default sampler (above); quality is flat from 5 to 100 steps on the v2 weights
# (docs/EVALUATION.md), so more steps buy no adherence, only time.
DEFAULT_STEPS: Final = 6
STEPS_MAX: Final = 1000
DEFAULT_GUIDANCE: Final = 2.0
GUIDANCE_MAX: Final = 20.0
DEFAULT_CONTROL_SCALE: Final = 1.0
CONTROL_SCALE_MAX: Final = 3.0


class RepaintSettings(BaseModel):
    """The repaint schedule of a twin or a reference repaint (RePaint's j and r)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    steps: int = Field(default=20, ge=2, le=200)
    jump_length: int = Field(default=5, ge=1, le=50)
    jump_n_sample: int = Field(default=2, ge=1, le=10)
    feather_px: float = Field(default=3.0, ge=0, le=64)
    # 6 px: the region must cover the blur halo of what the edit removes (at 128 px, 3 px
    # left a ghost of the old skull ring in microcephaly twins).
    dilate_px: float = Field(default=6.0, ge=0, le=64)


class GenerationRequest(BaseModel):
    """What a caller asks for (JSON-able; the gRPC API maps onto it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plane: str = Field(description="standard plane code (any case)")
    n: int = Field(default=1, ge=1, le=COUNT_MAX, description="samples (sample i: seed + i)")
    seed: int = Field(default=0, ge=0, lt=SEED_LIMIT, description="seed of sample 0")
    steps: int = Field(default=DEFAULT_STEPS, ge=1, le=STEPS_MAX, description="sampler steps")
    guidance: float = Field(default=DEFAULT_GUIDANCE, ge=0.0, le=GUIDANCE_MAX,
                            description="classifier-free guidance (1 = none)")
    control_scale: float = Field(default=DEFAULT_CONTROL_SCALE, ge=0.0, le=CONTROL_SCALE_MAX,
                                 description="strength of the anatomy control")
    sampler: SamplerName = Field(default=DEFAULT_SAMPLER, description="sampler")
    # A template's gestational age: the range its biometry covers.
    ga_weeks: float | None = Field(default=None, ge=GA_MIN, le=GA_MAX,
                                   description="gestational age of the template, weeks")
    preset: str | None = Field(default=None, description="anomaly preset (any case)")
    edits: tuple[Edit, ...] = ()
    pair: bool = Field(default=False, description="normal image + abnormal twin")
    repaint: RepaintSettings = RepaintSettings()
    # The look: "real" (clinical scans) or "phantom"; unset = real where the weights serve
    # it, else phantom (fetalflex/appearance.py).
    appearance: Appearance | None = Field(
        default=None, description="the look: real or phantom (default: real where the "
                                  "weights serve it, else phantom)")

    @field_validator("plane", mode="before")
    @classmethod
    def _plane_code(cls, v: object) -> object:
        """Planes are case-insensitive ('tv' is TV); the canonical code is stored."""
        return canonical_code(v) if isinstance(v, str) else v

    @field_validator("appearance", mode="before")
    @classmethod
    def _appearance_name(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("preset", mode="before")
    @classmethod
    def _preset_name(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> GenerationRequest:
        get_plane(self.plane)
        if self.preset is not None:
            pr = get_preset(self.preset)
            if self.plane not in pr.planes:
                raise ValueError(f"preset: {self.preset!r} applies to plane(s) "
                                 f"{', '.join(pr.planes)}, not to plane {self.plane}")
        if self.pair and self.preset is None and not self.edits:
            raise ValueError("pair: a counterfactual pair needs a preset or edits")
        return self

    def check_reference(self, reference: str, fix: str = "") -> None:
        """The one rule of a repaint: it changes only what a preset or edits change, so a
        reference image (named as the caller knows it: ``reference``) needs them; ``fix``
        says how in the caller's words."""
        if self.preset is None and not self.edits:
            raise InvalidRequestError("edits", f"a repaint of {reference} needs a preset or "
                                               f"edits: it changes only what they edit{fix}")

    def edit_list(self) -> list[Edit]:
        """The preset's edits, then the request's (``anatomy.compose.edit_list``)."""
        return edit_list(self.plane, self.preset, self.edits)
