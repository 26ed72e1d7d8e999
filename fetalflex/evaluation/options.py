"""Options of ``fetalflex evaluate`` and ``evaluate-downstream`` (importable without torch:
the CLI builds its flags and ``--help`` defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.presets import PRESETS
from fetalflex.appearance import Appearance
from fetalflex.request import (
    CONTROL_SCALE_MAX,
    DEFAULT_CONTROL_SCALE,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    GUIDANCE_MAX,
    SamplerName,
    require_one_of,
)

# The downstream experiment's training regimes (``evaluation/downstream.py``).
CONDITIONS = ("synthetic", "synthetic_no_control", "normal_only", "oracle")
# Its image classifiers (``evaluation/classifier.py``): ``small`` is the reader of the runs
# up to v3 (receptive field 46 px), ``wide`` sees a whole 128 x 128 plane (190 px).
READERS = ("small", "wide")
DEFAULT_READER = "wide"
# The layouts ``evaluate-downstream-real`` generates its plane scans from: ``sector``, the
# field of view of a real training scan of the same plane (its ``background``, the rest not
# labelled), as the generator saw FETAL_PLANES_DB scans in training; ``empty``, nothing
# labelled, the default: sector layouts measured no better (docs/EVALUATION.md, session 26).
SYNTH_LAYOUTS = ("empty", "sector")


@dataclass(frozen=True)
class EvalOptions:
    n_per_plane: int = 8
    # sampler steps compared: the 5..100 and the default
    steps: tuple[int, ...] = tuple(sorted({5, 10, 25, 50, 100, DEFAULT_STEPS}))
    default_steps: int = DEFAULT_STEPS  # the steps of the abnormal-layout and twin rows
    guidance: float | None = None    # None: the weights' recommendation for the look
    sampler: SamplerName = DEFAULT_SAMPLER
    seed: int = 0
    planes: tuple[str, ...] = PLANE_CODES
    twins_per_preset: int = 4
    # The look asked for: this evaluation's references are phantoms (brightness, texture and
    # twin signs against the simulator), so "phantom" by default; "real" measures how much
    # of the phantom anatomy the real look keeps (adherence, twins).
    appearance: Appearance = "phantom"

    def __post_init__(self) -> None:
        if self.default_steps not in self.steps:
            raise ValueError(f"default_steps: {self.default_steps} must be one of the "
                             f"compared steps {list(self.steps)}")
        if self.n_per_plane < 2:
            raise ValueError("n_per_plane: at least 2 (the brightness floor needs another "
                             "layout of the plane)")


@dataclass(frozen=True)
class DownstreamOptions:
    normals_per_plane: int = 120     # real normal phantoms for training, per plane
    synth_per_preset: int = 48       # FetalFlex twins per preset (= oracle abnormal count)
    test_per_preset: int = 100       # abnormal test phantoms per preset (and as many normals)
    plane_sizes: tuple[int, ...] = (1, 2, 4, 8)
    plane_synth_per_plane: int = 32
    plane_test_per_plane: int = 40
    train_seeds: tuple[int, ...] = (0, 1, 2)
    reader: str = DEFAULT_READER
    classifier_steps: int = 600
    repaint_batch: int = 16
    seed: int = 0
    presets: tuple[str, ...] = field(default_factory=lambda: tuple(p.name for p in PRESETS))
    # How the twins are synthesized (the request schema's names and defaults).
    guidance: float = DEFAULT_GUIDANCE
    control_scale: float = DEFAULT_CONTROL_SCALE
    # Which training regimes to run, and whether to run the plane-classifier experiment: a
    # run that compares synthesis settings needs only the twin regimes (``normal_only`` and
    # ``oracle`` never see a generated image, so they do not change with the generator).
    conditions: tuple[str, ...] = CONDITIONS
    plane_experiment: bool = True

    def __post_init__(self) -> None:
        require_one_of("reader", self.reader, READERS)
        for c in self.conditions:
            require_one_of("conditions", c, CONDITIONS)
        if not self.conditions:
            raise ValueError("conditions: at least one is needed")
        for name, v, top in (("guidance", self.guidance, GUIDANCE_MAX),
                             ("control_scale", self.control_scale, CONTROL_SCALE_MAX)):
            if not 0.0 <= v <= top:
                raise ValueError(f"{name}: must be within [0, {top}], got {v}")


REAL_DOWNSTREAM_PARTS: tuple[str, ...] = ("heads", "planes", "brain_planes", "microcephaly")


@dataclass(frozen=True)
class RealEvalOptions:
    """``fetalflex evaluate-real`` (``evaluation/real.py``): instruments' training steps, the
    Frechet distance's PCA axes, generation batch, seed, bootstrap resamples, appearance."""

    reader_steps: int = 800
    segmenter_steps: int = 1200
    fd_dims: int = 16
    batch: int = 16
    seed: int = 0  # the instruments' training, the real halves, the bootstrap
    # Another draw of the same generation requests (seed = generation_seed x 10^6 + index),
    # instruments unchanged: the generator's seed-to-seed spread.
    generation_seed: int = 0
    bootstrap: int = 1000
    appearance: str = "real"
    twins_per_plane: int = 4  # template layouts per plane for the anomaly twins (0: skip)
    # of every generated scan; None: what the weights recommend (``Engine.resolve``)
    guidance: float | None = None
    steps: int | None = None
    sampler: str | None = None


@dataclass(frozen=True)
class RealDownstreamOptions:
    """``fetalflex evaluate-downstream-real`` (``evaluation/real_downstream.py``).

    ``head_sizes`` / ``plane_sizes``: real training scans per cell (heads: scans; planes:
    scans per class); 0 = all of the training split. ``seeds``: training seeds per cell
    (different real subsets and initialisations)."""

    head_sizes: tuple[int, ...] = (25, 50, 100, 0)
    plane_sizes: tuple[int, ...] = (10, 25, 100, 0)
    seeds: tuple[int, ...] = (0, 1, 2)
    segmenter_steps: int = 600
    reader_steps: int = 600
    synth_heads: int = 200          # generated head scans (requested outlines)
    synth_per_class: int = 100      # generated scans per plane class
    synth_layouts: str = "empty"    # what their layouts say (SYNTH_LAYOUTS)
    # real + synthetic plane readers: the share of every batch drawn from the real scans
    # (None: real and generated scans in one pool, the runs up to session 25)
    reader_real_share: float | None = None
    # real + synthetic head segmenters: the same for their batches (None: one pool)
    segmenter_real_share: float | None = None
    microcephaly_heads: int = 40    # small requested outlines read back (the anomaly part)
    microcephaly_scale: float = 0.75  # their size against real outlines of the same scans
    bootstrap: int = 1000
    batch: int = 16
    seed: int = 0
    appearance: str = "real"
    # of every generated scan; None: what the weights recommend (``Engine.resolve``)
    guidance: float | None = None
    parts: tuple[str, ...] = ("heads", "planes", "brain_planes", "microcephaly")

    def __post_init__(self) -> None:
        for name, sizes in (("head_sizes", self.head_sizes), ("plane_sizes", self.plane_sizes)):
            if not sizes or any(n < 0 for n in sizes):
                raise ValueError(f"{name}: give one or more sizes >= 0 (0 = all)")
        if not self.seeds:
            raise ValueError("seeds: give at least one training seed")
        for name, v in (("segmenter_steps", self.segmenter_steps),
                        ("reader_steps", self.reader_steps), ("synth_heads", self.synth_heads),
                        ("synth_per_class", self.synth_per_class)):
            if v < 1:
                raise ValueError(f"{name}: must be >= 1, got {v}")
        if not 0.3 <= self.microcephaly_scale < 1.0:
            raise ValueError(f"microcephaly_scale: must be within [0.3, 1), got "
                             f"{self.microcephaly_scale}")
        require_one_of("synth_layouts", self.synth_layouts, SYNTH_LAYOUTS)
        for name, share in (("reader_real_share", self.reader_real_share),
                            ("segmenter_real_share", self.segmenter_real_share)):
            if share is not None and not 0.0 < share < 1.0:
                raise ValueError(f"{name}: must be within (0, 1), got {share}")
        for part in self.parts:
            require_one_of("parts", part, REAL_DOWNSTREAM_PARTS)
