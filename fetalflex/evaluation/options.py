"""Options of ``fetalflex evaluate`` (importable without torch: the CLI builds its flags
and ``--help`` defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.request import DEFAULT_SAMPLER, DEFAULT_STEPS, SamplerName


@dataclass(frozen=True)
class EvalOptions:
    n_per_plane: int = 8
    # sampler steps compared: the 5..100 and the default
    steps: tuple[int, ...] = tuple(sorted({5, 10, 25, 50, 100, DEFAULT_STEPS}))
    default_steps: int = DEFAULT_STEPS  # the steps of the abnormal-layout and twin rows
    guidance: float | None = None    # None: the request schema's default
    sampler: SamplerName = DEFAULT_SAMPLER
    seed: int = 0
    planes: tuple[str, ...] = PLANE_CODES
    twins_per_preset: int = 4

    def __post_init__(self) -> None:
        if self.default_steps not in self.steps:
            raise ValueError(f"default_steps: {self.default_steps} must be one of the "
                             f"compared steps {list(self.steps)}")
        if self.n_per_plane < 2:
            raise ValueError("n_per_plane: at least 2 (the brightness floor needs another "
                             "layout of the plane)")
