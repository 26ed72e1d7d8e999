"""The denoiser's tensor signature and its names on a Triton server, declared once.

The ONNX exporter (input/output names, dynamic axes), the embedded backend, the Triton
configs and the Triton client all read this list (after pytriton's ``Tensor`` specs).
``-1`` marks the dynamic batch axis; ``"H"``, ``"W"``, ``"K"``, ``"C"`` are filled from a
:class:`DenoiserConfig`. The Triton model names (one per serving variant) and the
numpy -> Triton dtype names are here too: ``export/`` writes the repository with them and
``backends/triton.py`` and the service call the models by them.
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
# Triton's names for the tensors' dtypes (the wire form; config.pbtxt writes "TYPE_" + name).
TRITON_DTYPES: Final[dict[type[np.generic], str]] = {
    np.float32: "FP32", np.float16: "FP16", np.int64: "INT64"}
# The Triton models, by serving variant: ONNX Runtime (GPU), TensorRT, and the CPU model.
TRITON_MODEL_NAMES: Final[dict[str, str]] = {
    "onnx": "fetalflex_denoiser_onnx", "trt": "fetalflex_denoiser_trt",
    "cpu": "fetalflex_denoiser_cpu"}
DEFAULT_TRITON_MODEL: Final = TRITON_MODEL_NAMES["cpu"]
# Rows of one Triton call: the repository's max_batch_size, and the client's chunk size
# (a generation's call can hold more: 3 rows per image with plane contrast, x count).
TRITON_MAX_BATCH: Final = 32

INPUT_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in INPUTS)
OUTPUT_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in OUTPUTS)
DYNAMIC_AXES: Final[dict[str, dict[int, str]]] = {s.name: {0: "batch"}
                                                  for s in (*INPUTS, *OUTPUTS)}
