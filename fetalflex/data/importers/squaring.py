"""Scans of any shape -> the model's square size, one stated way for every importer.

**Letterbox**: the scan is centred on a square canvas as wide as its longer side, the added
bands are black (in the label map: ``background``, outside the scan), then the canvas is
resampled to ``size``: images by area averaging (PIL's box filter), label maps by nearest
neighbour. The aspect ratio is kept (a head stays an ellipse of the right eccentricity) and
nothing of the scan is cropped away; the cost is the bands (800 x 540 HC18 scans lose 33 % of
the square to them). ``Square.px_to_unit`` maps scan pixels to the square's normalized
coordinates, so outlines given in scan pixels land where the pixels do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fetalflex.anatomy.structures import BACKGROUND


@dataclass(frozen=True)
class Square:
    """Where a (height, width) scan sits in its letterbox square."""

    height: int
    width: int

    @property
    def side(self) -> int:
        return max(self.height, self.width)

    @property
    def offset(self) -> tuple[int, int]:
        """(x, y) of the scan's top-left pixel in the square."""
        return (self.side - self.width) // 2, (self.side - self.height) // 2

    def px_to_unit(self, x: float, y: float) -> tuple[float, float]:
        """A point in scan pixel coordinates (pixel centres at integers) -> [0, 1]^2."""
        ox, oy = self.offset
        return (x + 0.5 + ox) / self.side, (y + 0.5 + oy) / self.side

    def inside(self, size: int) -> NDArray[np.bool_]:
        """Pixels of the resampled square that lie on the scan (not in a band)."""
        ox, oy = self.offset
        c = (np.arange(size) + 0.5) * self.side / size
        return ((c[:, None] >= oy) & (c[:, None] < oy + self.height)
                & (c[None, :] >= ox) & (c[None, :] < ox + self.width))


def _canvas(arr: NDArray[np.uint8], fill: int) -> tuple[NDArray[np.uint8], Square]:
    sq = Square(int(arr.shape[0]), int(arr.shape[1]))
    out = np.full((sq.side, sq.side), fill, dtype=np.uint8)
    ox, oy = sq.offset
    out[oy:oy + sq.height, ox:ox + sq.width] = arr
    return out, sq


def square_image(image: NDArray[np.uint8], size: int) -> tuple[NDArray[np.uint8], Square]:
    """A grey scan (H, W) -> (size, size) uint8: letterbox, then area resampling."""
    canvas, sq = _canvas(image, 0)
    if sq.side == size:
        return canvas, sq
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.BOX),
                      dtype=np.uint8), sq


def square_label_map(label_map: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """A label map (H, W) -> (size, size): letterbox with background, nearest neighbour."""
    canvas, sq = _canvas(label_map, BACKGROUND)
    if sq.side == size:
        return canvas
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.NEAREST),
                      dtype=np.uint8)
