"""The scan sector: where a real scan images the body, found from its own pixels.

A real scan shows the probe's field of view -- a fan (curved probes) or a rectangle (linear
probes), sometimes with cut-out information panels -- on a black screen. Outside it the
pixels are black, and a generator that is told nothing there paints tissue over the whole
square (seen on the v4/v5 real-appearance weights: FETAL_PLANES_DB requests, all
unlabelled, came back without the fan's black corners; real validation scans are 20-60 %
black). So the importers label the outside of the sector ``background`` ("outside the
scan sector", the label the phantoms and the letterbox bands already use): the model then
learns, and a request can say, where the scan is.

Method, on the squared and resampled image: pixels above ``threshold`` grey levels; a
morphological opening (text, calipers, rulers and tick marks are thin and detached); the
largest connected component is the imaged region; the sector is its filled convex hull (the
imaged region is convex; dark fluid inside it, even touching its edge, stays inside).
Existing labels (an annotated head, the letterbox bands) are never changed; only pixels
that are "not labelled" and outside the hull become ``background``. A scan whose imaged
region covers (almost) the whole square gets no background.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from fetalflex.anatomy.structures import BACKGROUND, UNLABELLED

SECTOR_THRESHOLD = 1     # grey levels (0-255) above which a pixel is imaged (the screen is 0;
# dim deep parts of a fan are 2-10: a higher threshold cut them off on 4-8 % of the scans)
SECTOR_OPENING = 1       # iterations of a 3 x 3 opening before the components are found
SECTOR_MIN_FRACTION = 0.05  # a component smaller than this is not a sector: label nothing
SECTOR_NOTE = ("outside the imaged sector (filled convex hull of the largest region above "
               f"{SECTOR_THRESHOLD} grey levels) labelled background where not labelled")


def sector_mask(image: NDArray[np.uint8], threshold: int = SECTOR_THRESHOLD,
                opening: int = SECTOR_OPENING) -> NDArray[np.bool_]:
    """The pixels inside the scan's imaged sector (True), from the image alone."""
    if image.ndim != 2:
        raise ValueError(f"image: must be 2-D grey, got shape {image.shape}")
    h, w = image.shape
    lit = image > threshold
    if opening:
        lit = ndimage.binary_opening(lit, structure=np.ones((3, 3), bool), iterations=opening)
    lab, n = ndimage.label(lit)
    if n == 0:
        return np.ones((h, w), dtype=bool)
    sizes = np.bincount(lab.ravel())[1:]
    biggest = int(np.argmax(sizes)) + 1
    if sizes[biggest - 1] < SECTOR_MIN_FRACTION * h * w:
        return np.ones((h, w), dtype=bool)
    ys, xs = np.nonzero(lab == biggest)
    # pixel corners, so that the hull covers whole pixels at its border
    pts = np.concatenate([np.stack([xs + dx, ys + dy], axis=1)
                          for dx in (0.0, 1.0) for dy in (0.0, 1.0)]).astype(np.float64)
    try:
        hull = ConvexHull(pts)
    except QhullError:  # degenerate (a line): nothing to call outside
        return np.ones((h, w), dtype=bool)
    poly = [(float(x), float(y)) for x, y in pts[hull.vertices]]
    canvas = Image.new("1", (w, h), 0)
    ImageDraw.Draw(canvas).polygon(poly, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def label_outside_sector(label_map: NDArray[np.uint8], image: NDArray[np.uint8]
                         ) -> NDArray[np.uint8]:
    """``label_map`` with its unlabelled pixels outside the image's sector set to
    ``background``; every other label kept."""
    if label_map.shape != image.shape:
        raise ValueError(f"label_map {label_map.shape} and image {image.shape} differ")
    out = label_map.copy()
    out[(~sector_mask(image)) & (label_map == UNLABELLED)] = BACKGROUND
    return out
