"""Geometry of the curvilinear probe's scan sector (the fan).

All coordinates are normalized image coordinates: x to the right and y down, both in
[0, 1] across a square image, so one geometry serves every image size. The virtual apex
of the fan sits above the image; beams fan out by +/- ``half_angle_deg``. Everything
outside the sector is label ``background`` and black in the B-mode image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Sector:
    apex_x: float = 0.5
    apex_y: float = -0.16
    r_min: float = 0.19  # the probe face (top arc of the fan)
    r_max: float = 1.10  # deepest imaged point (bottom arc)
    half_angle_deg: float = 37.0

    def polar(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[
        NDArray[np.float64], NDArray[np.float64]
    ]:
        """(radius, angle in degrees from the central beam, positive to the right)."""
        dx = x - self.apex_x
        dy = y - self.apex_y
        return np.hypot(dx, dy), np.degrees(np.arctan2(dx, dy))

    def contains(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.bool_]:
        r, th = self.polar(x, y)
        return (r >= self.r_min) & (r <= self.r_max) & (np.abs(th) <= self.half_angle_deg)


SECTOR = Sector()


def pixel_centres(size: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Normalized (x, y) of every pixel centre of a size x size image, each (size, size)."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")


@lru_cache(maxsize=16)
def sector_mask(size: int) -> NDArray[np.bool_]:
    x, y = pixel_centres(size)
    mask = SECTOR.contains(x, y)
    mask.setflags(write=False)
    return mask
