"""The two forms of an anatomy layout and the conversions between them.

* **Label map**: ``(size, size)`` uint8 array of global label ids (one per pixel).
* **Structure list**: ordered shapes (name + ellipse or box: centre, half-axes, angle)
  in normalized image coordinates. Rasterization paints them in the plane's z-order
  over amniotic fluid (or over "not labelled"), then, unless the list says
  ``"sector": "none"``, labels everything outside our scan sector background.

Coordinates: x right, y down, both in [0, 1] across the (square) image. ``axes`` are
half-axes in the same units. ``angle`` is in degrees, rotating the shape's first axis
from +x towards +y (clockwise on screen).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import ndimage

from fetalflex.anatomy.biometry import GA_ACCEPTED_MAX, GA_ACCEPTED_MIN
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.sector import pixel_centres, sector_mask
from fetalflex.anatomy.structures import (
    AMNIOTIC_FLUID,
    BACKGROUND,
    NUM_LABELS,
    UNLABELLED,
    label_id,
    structure,
)
from fetalflex.errors import InvalidLayoutError

ShapeKind = Literal["ellipse", "box", "ring"]
# A "ring" is the band of an ellipse from its outline inward, this share of the smaller
# half-axis wide (at least 1.5 px): the form of an outline-only structure, e.g. a skull
# drawn as the sonographer's head ellipse (HC18) with the inside left unlabelled. 0.08 is
# the templates' skull thickness (1 + 0.025 BPD mm) over the half BPD at mid-gestation.
RING_WIDTH = 0.08
LabelMap = NDArray[np.uint8]
# Field of view (image side, mm): the default of a label map that does not say its own, and
# the largest accepted.
DEFAULT_FIELD_MM = 100.0
FIELD_MM_MAX = 1000.0


class Shape(BaseModel):
    """One structure's shape. Several shapes may share a structure (e.g. two lungs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    structure: str
    kind: ShapeKind = "ellipse"
    center: tuple[float, float]
    axes: tuple[float, float] = Field(description="half-axes (normalized)")
    angle: float = 0.0

    @field_validator("structure")
    @classmethod
    def _known(cls, v: str) -> str:
        structure(v)
        if v == "background":
            raise ValueError("background is implicit (outside the scan sector) and cannot be drawn")
        return v

    @field_validator("center")
    @classmethod
    def _finite_center(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(c) and -2.0 <= c <= 3.0 for c in v):
            raise ValueError("centre must be finite and within [-2, 3] (normalized units)")
        return v

    @field_validator("axes")
    @classmethod
    def _positive_axes(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(a) and 0.0 < a <= 5.0 for a in v):
            raise ValueError("half-axes must be finite, > 0 and <= 5 (normalized units)")
        return v

    @field_validator("angle")
    @classmethod
    def _finite_angle(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("angle must be finite")
        return v


class StructureList(BaseModel):
    """A layout as an ordered list of shapes (the JSON form callers can send)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plane: str
    field_mm: float = Field(gt=0, le=FIELD_MM_MAX, description="side length of the image in mm")
    ga_weeks: float | None = Field(default=None, ge=GA_ACCEPTED_MIN, le=GA_ACCEPTED_MAX)
    structures: tuple[Shape, ...]
    # What the shapes are painted over: "amniotic_fluid" (a full layout) or "unlabelled":
    # only the listed structures are said, everything else is left to the model (partial
    # anatomy, e.g. a real-appearance TT plane with just its head outline).
    fill: Literal["amniotic_fluid", "unlabelled"] = "amniotic_fluid"
    # The scan sector: "standard" labels everything outside our probe's fan (anatomy.sector)
    # ``background`` (the black screen around a scan; with either fill), "none" says nothing
    # about it. Real scans are 20-60 % black screen: a real-appearance request without a
    # sector gets tissue over the whole square.
    sector: Literal["standard", "none"] = "standard"

    @field_validator("plane")
    @classmethod
    def _plane(cls, v: str) -> str:
        get_plane(v)
        return v

    @model_validator(mode="after")
    def _structures_in_plane(self) -> StructureList:
        p = get_plane(self.plane)
        for i, s in enumerate(self.structures):
            if s.structure not in p.structures:
                raise ValueError(
                    f"structures[{i}].structure: {s.structure!r} is not part of plane "
                    f"{self.plane} (allowed: {', '.join(p.structures)})"
                )
        return self


@dataclass
class Layout:
    """A label map with the facts needed to interpret it."""

    plane: str
    label_map: LabelMap
    field_mm: float
    ga_weeks: float | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = get_plane(self.plane)
        lm = self.label_map
        if lm.ndim != 2 or lm.shape[0] != lm.shape[1]:
            raise InvalidLayoutError("label_map",
                                     f"must be a square 2-D array, got shape {lm.shape}")
        if lm.dtype != np.uint8:
            raise InvalidLayoutError("label_map", f"dtype must be uint8, got {lm.dtype}")
        present = set(np.unique(lm).tolist())
        bad = present - set(p.label_ids) - {UNLABELLED}
        if bad:
            names = [structure(int(b)).name if b < NUM_LABELS else f"id {b}" for b in sorted(bad)]
            raise InvalidLayoutError(
                "label_map", f"label ids {sorted(bad)} ({', '.join(names)}) are not part of "
                f"plane {self.plane}"
            )

    @property
    def size(self) -> int:
        return int(self.label_map.shape[0])

    @property
    def mm_per_px(self) -> float:
        return self.field_mm / self.size

    def with_map(self, label_map: LabelMap) -> Layout:
        return Layout(self.plane, label_map, self.field_mm, self.ga_weeks, dict(self.meta))

    def area_mm2(self, name: str) -> float:
        return float((self.label_map == label_id(name)).sum()) * self.mm_per_px**2


def shape_mask(shape: Shape, size: int) -> NDArray[np.bool_]:
    """Pixels of a size x size image whose centres fall inside the shape."""
    x, y = pixel_centres(size)
    return _inside(shape.kind, shape.center, shape.axes, shape.angle, x, y, size)


def _inside(
    kind: str,
    center: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    size: int,
) -> NDArray[np.bool_]:
    # Thin structures (falx, septum) keep at least one pixel of width at any size.
    rmin = 0.55 / size
    rx, ry = max(axes[0], rmin), max(axes[1], rmin)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    dx, dy = x - center[0], y - center[1]
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    if kind == "ellipse":
        return u * u + v * v <= 1.0
    if kind == "ring":
        w = max(RING_WIDTH * min(rx, ry), 1.5 / size)
        iu = (dx * c + dy * s) / max(rx - w, rmin)
        iv = (-dx * s + dy * c) / max(ry - w, rmin)
        return (u * u + v * v <= 1.0) & (iu * iu + iv * iv > 1.0)
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)


def rasterize(structures: StructureList, size: int) -> Layout:
    """Structure list -> label map, painting in the plane's z-order."""
    if not 16 <= size <= 2048:
        raise InvalidLayoutError("size", f"must be between 16 and 2048 pixels, got {size}")
    p = get_plane(structures.plane)
    partial = structures.fill == "unlabelled"
    lm = np.full((size, size), UNLABELLED if partial else AMNIOTIC_FLUID, dtype=np.uint8)
    ordered = sorted(structures.structures, key=lambda s: p.z_order(s.structure))  # stable
    for s in ordered:
        lm[shape_mask(s, size)] = label_id(s.structure)
    if structures.sector == "standard":
        lm[~sector_mask(size)] = BACKGROUND
    return Layout(structures.plane, lm, structures.field_mm, structures.ga_weeks)


def _fit(mask: NDArray[np.bool_], size: int) -> tuple[ShapeKind, tuple[float, float],
                                                       tuple[float, float], float] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) < 3:
        return None
    cx, cy = xs.mean(), ys.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy])) + np.eye(2) * (1.0 / 12.0)
    evals, evecs = np.linalg.eigh(cov)
    major = evecs[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    l1, l2 = max(evals[1], 1e-6), max(evals[0], 1e-6)
    xg, yg = pixel_centres(size)
    centre = ((cx + 0.5) / size, (cy + 0.5) / size)
    best: tuple[float, ShapeKind, tuple[float, float]] | None = None
    fits: tuple[tuple[ShapeKind, float], ...] = (("ellipse", 2.0), ("box", math.sqrt(3.0)))
    for kind, k in fits:
        axes = (k * math.sqrt(l1) / size, k * math.sqrt(l2) / size)
        cand = _inside(kind, centre, axes, angle, xg, yg, size)
        inter = np.logical_and(cand, mask).sum()
        union = np.logical_or(cand, mask).sum()
        iou = inter / max(union, 1)
        if best is None or iou > best[0]:
            best = (iou, kind, axes)
    assert best is not None
    return best[1], centre, best[2], angle


def _fit_components(region: NDArray[np.bool_], size: int, min_pixels: int) -> list[
    tuple[ShapeKind, tuple[float, float], tuple[float, float], float]
]:
    comps, n = ndimage.label(region)
    fits = []
    for k in range(1, n + 1):
        comp = ndimage.binary_fill_holes(comps == k)
        if comp.sum() < min_pixels:
            continue
        fit = _fit(comp, size)
        if fit is not None:
            fits.append(fit)
    return fits


def extract(layout: Layout, min_pixels: int = 3) -> StructureList:
    """Label map -> structure list: fitted ellipses or boxes, occlusion-aware.

    A structure may be hidden in part by structures drawn above it (a skull ring cut by
    the cisterna magna, a ventricle around its choroid plexus). Two readings are fitted:
    each visible component alone, and each component of (visible + everything drawn
    above it). The reading whose shapes, once overdrawn by the higher structures,
    reproduce the visible pixels best (IoU) is kept. Amniotic fluid is the base of every
    map and is not listed.
    """
    p = get_plane(layout.plane)
    lm = layout.label_map
    size = layout.size
    xg, yg = pixel_centres(size)
    shapes: list[Shape] = []
    for name in p.structures:
        lid = label_id(name)
        if lid == AMNIOTIC_FLUID:
            continue
        mask = lm == lid
        if mask.sum() < min_pixels:
            continue
        z = p.z_order(name)
        higher = np.isin(lm, [label_id(s) for s in p.structures if p.z_order(s) > z])
        comps, _n = ndimage.label(mask | higher)
        touching = np.unique(comps[mask])
        occluded = np.isin(comps, touching[touching > 0])
        best: tuple[float, list[tuple[ShapeKind, tuple[float, float], tuple[float, float],
                                      float]]] | None = None
        for region in (mask, occluded):
            fits = _fit_components(region, size, min_pixels)
            painted = np.zeros_like(mask)
            for kind, centre, axes, angle in fits:
                painted |= _inside(kind, centre, axes, angle, xg, yg, size)
            painted &= ~higher & sector_mask(size)
            iou = np.logical_and(painted, mask).sum() / max(np.logical_or(painted, mask).sum(), 1)
            if best is None or iou > best[0] + 1e-9:
                best = (float(iou), fits)
        assert best is not None
        for kind, centre, axes, angle in best[1]:
            shapes.append(Shape(structure=name, kind=kind, center=centre, axes=axes, angle=angle))
    return StructureList(
        plane=layout.plane, field_mm=layout.field_mm, ga_weeks=layout.ga_weeks,
        structures=tuple(shapes),
        fill="unlabelled" if bool((lm == UNLABELLED).any()) else "amniotic_fluid",
        # a list can only say "our fan" or nothing: any outside of the scan reads as ours
        sector="standard" if bool((lm == BACKGROUND).any()) else "none",
    )


def one_hot(label_map: LabelMap, num_labels: int = NUM_LABELS) -> NDArray[np.float32]:
    """(H, W) label ids -> (num_labels, H, W) float32 channels (the model's layout input).

    ``UNLABELLED`` pixels get all-zero channels ("not said"), like the unconditional input."""
    known = label_map[label_map != UNLABELLED]
    if known.max(initial=0) >= num_labels:
        raise InvalidLayoutError("label_map",
                                 f"id {int(known.max())} >= num_labels {num_labels}")
    eye = np.eye(num_labels + 1, num_labels, dtype=np.float32)  # the last row is all zeros
    idx = np.where(label_map == UNLABELLED, num_labels, label_map)
    return np.ascontiguousarray(eye[idx].transpose(2, 0, 1))


def labelled_fraction(label_map: LabelMap) -> float:
    """Share of pixels whose anatomy the layout says (1.0 for a full layout)."""
    return float((label_map != UNLABELLED).mean())


def dice_per_label(a: LabelMap, b: LabelMap, labels: list[int] | None = None) -> dict[int, float]:
    """Dice per label id between two label maps (labels absent from both are skipped)."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    ids = labels if labels is not None else sorted(set(np.unique(a)) | set(np.unique(b)))
    out: dict[int, float] = {}
    for i in ids:
        ma, mb = a == i, b == i
        denom = int(ma.sum() + mb.sum())
        if denom == 0:
            continue
        out[int(i)] = 2.0 * float(np.logical_and(ma, mb).sum()) / denom
    return out
