"""The denoiser's tensor signature, declared once.

The ONNX exporter (input/output names, dynamic axes), the embedded backend, the Triton
configs and the Triton client all read this list (after pytriton's ``Tensor`` specs).
``-1`` marks the dynamic batch axis; ``"H"``, ``"W"``, ``"K"``, ``"C"`` are filled from a
:class:`DenoiserConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from fetalflex.model.config import DenoiserConfig


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: type[np.generic]
    shape: tuple[int | str, ...]  # -1 = batch

    def concrete(self, cfg: DenoiserConfig) -> tuple[int, ...]:
        sizes = {"H": cfg.image_size, "W": cfg.image_size, "K": cfg.num_labels,
                 "C": cfg.cond_dim, "1": 1}
        return tuple(d if isinstance(d, int) else sizes[d] for d in self.shape)


INPUTS: Final[tuple[TensorSpec, ...]] = (
    TensorSpec("x_t", np.float32, (-1, "1", "H", "W")),
    TensorSpec("timestep", np.int64, (-1,)),
    TensorSpec("layout", np.float32, (-1, "K", "H", "W")),
    TensorSpec("condition", np.float32, (-1, "C")),
    TensorSpec("control_scale", np.float32, (-1,)),
)
OUTPUTS: Final[tuple[TensorSpec, ...]] = (
    TensorSpec("prediction", np.float32, (-1, "1", "H", "W")),
)
INPUT_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in INPUTS)
OUTPUT_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in OUTPUTS)
DYNAMIC_AXES: Final[dict[str, dict[int, str]]] = {s.name: {0: "batch"}
                                                  for s in (*INPUTS, *OUTPUTS)}
