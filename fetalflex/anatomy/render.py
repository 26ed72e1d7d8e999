"""Colour pictures of label maps (for people; the model reads label ids)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fetalflex.anatomy.structures import STRUCTURES

PALETTE: NDArray[np.uint8] = np.array([s.colour for s in STRUCTURES], dtype=np.uint8)


def colourize(label_map: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(H, W) label ids -> (H, W, 3) RGB."""
    return PALETTE[label_map]


def overlay(image: NDArray[np.uint8], label_map: NDArray[np.uint8],
            alpha: float = 0.45) -> NDArray[np.uint8]:
    """Blend a colour layout over a grayscale image; shared regions stay unblended."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    col = colourize(label_map).astype(np.float32)
    fetal = label_map > 2
    rgb[fetal] = (1 - alpha) * rgb[fetal] + alpha * col[fetal]
    return np.clip(rgb, 0, 255).astype(np.uint8)
