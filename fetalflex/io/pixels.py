"""The pixel mapping between uint8 images and the model's [-1, 1] range, defined once.

``0 -> -1.0`` and ``255 -> 1.0`` (``x = v / 127.5 - 1``); back, values are clipped to
[-1, 1] and rounded half to even (``np.round``), never truncated. Arithmetic is float32,
as the model's tensors are.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

SCALE: Final = 127.5  # half of the uint8 range


def to_unit(image: NDArray[np.uint8]) -> NDArray[np.float32]:
    """uint8 pixels -> float32 in [-1, 1]."""
    return image.astype(np.float32) / SCALE - 1.0


def to_uint8(x: NDArray[np.floating]) -> NDArray[np.uint8]:
    """float in [-1, 1] (clipped) -> uint8, rounded to the nearest value."""
    return np.round((np.clip(x, -1, 1) + 1) * SCALE).astype(np.uint8)
