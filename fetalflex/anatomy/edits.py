"""Edits on layouts: the way abnormal anatomy is made from normal anatomy.

Every edit works on the label map (the form that reaches the model), so it applies to
template layouts and to label maps from real annotations alike. Edits are pydantic
models with an ``op`` tag, so an edit list is plain JSON (CLI ``--edit`` and the gRPC
API take the same objects).

Rules shared by every edit:

* Pixels a structure leaves are filled from the nearest pixel that the edit does not
  touch (never from outside the scan sector), or with an explicit ``fill`` structure.
* A structure that grows or moves is painted at its own z-level (the plane's paint
  order): structures drawn above it keep their pixels, and it only covers pixels whose
  current label is in ``within`` (default: any structure inside the scan sector).
* The input's outside of the scan (its ``background``) is re-applied last: nothing is
  ever drawn outside the scan, and a layout without one does not gain our fan.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal, cast

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from scipy import ndimage

from fetalflex.anatomy.layout import LabelMap, Layout, Shape, shape_mask
from fetalflex.anatomy.planes import Plane
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.structures import BACKGROUND, label_id
from fetalflex.errors import EditError

Vec = NDArray[np.float64]
Mat = NDArray[np.float64]
MatrixFor = Callable[[Vec, Mat, Vec], tuple[Mat, Vec]]
"""(centroid, eigenvectors, eigenvalues) of a unit -> (A, t) of ``p' = c + A (p - c) + t``."""

# The fields in which an edit names structures.
_NAMING_FIELDS = ("structure", "structures", "within", "fill", "anchor", "toward")


class _Edit(BaseModel):
    """An edit: its fields say what to change; :meth:`apply` changes a layout."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def named(self) -> Iterator[tuple[str, str]]:
        """(field, structure name) for every structure the edit names."""
        for key in _NAMING_FIELDS:
            v = getattr(self, key, None)
            if isinstance(v, str):
                yield key, v
            elif isinstance(v, (list, tuple)):
                yield from ((key, name) for name in v)

    def check_plane(self, p: Plane) -> None:
        """Every structure the edit names is part of plane ``p`` (else an EditError naming
        the field)."""
        for key, name in self.named():
            if name not in p.structures:
                raise EditError(key, f"{name!r} is not part of plane {p.code} "
                                     f"(its structures: {', '.join(p.structures)})")

    @abstractmethod
    def apply(self, layout: Layout) -> Layout:
        """This edit applied to ``layout``, whose plane holds every structure it names
        (:func:`apply_edit` checks that first)."""


class Remove(_Edit):
    """Remove a structure; its pixels are filled from the surrounding anatomy."""

    op: Literal["remove"] = "remove"
    structure: str
    fill: str | None = None

    def apply(self, layout: Layout) -> Layout:
        lm = layout.label_map
        _require_present(lm, "structure", (self.structure,))
        holes = lm == label_id(self.structure)
        out = _fill(lm, holes, self.fill)
        _keep_outside(lm, out)
        return layout.with_map(out)


class Scale(_Edit):
    """Scale structures along their own principal axes (major, minor)."""

    op: Literal["scale"] = "scale"
    structures: tuple[str, ...] = Field(min_length=1)
    factor: float | tuple[float, float] = Field(description="isotropic or (major, minor)")
    about: Literal["component", "group"] = "component"
    within: tuple[str, ...] | None = None
    fill: str | None = None

    @model_validator(mode="after")
    def _factor(self) -> Scale:
        f = self.factor if isinstance(self.factor, tuple) else (self.factor, self.factor)
        if not all(math.isfinite(x) and 0.1 <= x <= 5.0 for x in f):
            raise ValueError("factor: each scale factor must be within [0.1, 5]")
        return self

    def apply(self, layout: Layout) -> Layout:
        _require_present(layout.label_map, "structures", self.structures)
        fmaj, fmin = self.factor if isinstance(self.factor, tuple) else (self.factor,) * 2

        def scale_m(c: Vec, evecs: Mat, evals: Vec) -> tuple[Mat, Vec]:
            a = evecs @ np.diag([fmin, fmaj]) @ evecs.T
            return a, np.zeros(2)

        return _affine(layout, self.structures, self.about, self.within, self.fill, scale_m)


class Translate(_Edit):
    """Move structures by (dx, dy) mm, or by ``distance_mm`` towards another structure."""

    op: Literal["translate"] = "translate"
    structures: tuple[str, ...] = Field(min_length=1)
    dx_mm: float = 0.0
    dy_mm: float = 0.0
    toward: str | None = None
    distance_mm: float = 0.0
    within: tuple[str, ...] | None = None
    fill: str | None = None

    @model_validator(mode="after")
    def _finite(self) -> Translate:
        for k in ("dx_mm", "dy_mm", "distance_mm"):
            if not math.isfinite(getattr(self, k)) or abs(getattr(self, k)) > 500:
                raise ValueError(f"{k}: must be finite and at most 500 mm")
        return self

    def apply(self, layout: Layout) -> Layout:
        lm = layout.label_map
        px_per_mm = _px_per_mm(layout)
        _require_present(lm, "structures", self.structures)
        shift = np.array([self.dx_mm, self.dy_mm]) * px_per_mm
        if self.toward is not None:
            _require_present(lm, "toward", (self.toward,))
            grp = np.isin(lm, _ids(self.structures))
            ys, xs = np.nonzero(grp)
            d = _centroid(lm, self.toward) - np.array([xs.mean(), ys.mean()])
            norm = float(np.hypot(*d))
            if norm > 0:
                shift = shift + d / norm * self.distance_mm * px_per_mm

        def move_m(c: Vec, evecs: Mat, evals: Vec) -> tuple[Mat, Vec]:
            return np.eye(2), shift

        return _affine(layout, self.structures, "group", self.within, self.fill, move_m)


class Rotate(_Edit):
    """Rotate structures about their centroid (degrees, clockwise on screen)."""

    op: Literal["rotate"] = "rotate"
    structures: tuple[str, ...] = Field(min_length=1)
    degrees: float = Field(ge=-360, le=360)
    about: Literal["component", "group"] = "group"
    within: tuple[str, ...] | None = None
    fill: str | None = None

    def apply(self, layout: Layout) -> Layout:
        _require_present(layout.label_map, "structures", self.structures)
        th = math.radians(self.degrees)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])

        def rot_m(c: Vec, evecs: Mat, evals: Vec) -> tuple[Mat, Vec]:
            return rot, np.zeros(2)

        return _affine(layout, self.structures, self.about, self.within, self.fill, rot_m)


class Dilate(_Edit):
    """Grow a structure outwards by ``mm`` (inside ``within``)."""

    op: Literal["dilate"] = "dilate"
    structure: str
    mm: float = Field(gt=0, le=100)
    within: tuple[str, ...] | None = None

    def apply(self, layout: Layout) -> Layout:
        lm = layout.label_map
        _require_present(lm, "structure", (self.structure,))
        mask = lm == label_id(self.structure)
        r = max(self.mm * _px_per_mm(layout), 0.5)
        grown = ndimage.distance_transform_edt(~mask) <= r + 0.5  # pixel-centre distances
        new_labels = np.full_like(lm, label_id(self.structure))
        return layout.with_map(_paint(get_plane(layout.plane), lm, lm, grown, new_labels,
                                      [self.structure], self.within))


class Erode(_Edit):
    """Shrink a structure inwards by ``mm``; freed pixels are filled from the surroundings."""

    op: Literal["erode"] = "erode"
    structure: str
    mm: float = Field(gt=0, le=100)
    fill: str | None = None

    def apply(self, layout: Layout) -> Layout:
        lm = layout.label_map
        _require_present(lm, "structure", (self.structure,))
        mask = lm == label_id(self.structure)
        r = max(self.mm * _px_per_mm(layout), 0.5)
        kept = ndimage.distance_transform_edt(mask) > r + 0.5
        out = _fill(lm, mask & ~kept, self.fill)
        _keep_outside(lm, out)
        return layout.with_map(out)


class Insert(_Edit):
    """Insert an ellipse or box of a structure.

    Position: ``center`` (normalized image coordinates), or relative to ``anchor``:
    its centroid moved ``fraction`` of the way to ``toward``'s centroid. Size:
    ``axes_mm``, or ``size_rel`` times the anchor's own principal half-axes.
    """

    op: Literal["insert"] = "insert"
    structure: str
    kind: Literal["ellipse", "box"] = "ellipse"
    center: tuple[float, float] | None = None
    anchor: str | None = None
    toward: str | None = None
    fraction: float = Field(default=0.0, ge=-3, le=3)
    axes_mm: tuple[float, float] | None = None
    size_rel: float | None = Field(default=None, gt=0, le=5)
    angle: float = 0.0
    within: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _where(self) -> Insert:
        if (self.center is None) == (self.anchor is None):
            raise ValueError("insert: give exactly one of center or anchor")
        if (self.axes_mm is None) == (self.size_rel is None):
            raise ValueError("insert: give exactly one of axes_mm or size_rel")
        if self.size_rel is not None and self.anchor is None:
            raise ValueError("size_rel: needs an anchor structure")
        if self.axes_mm is not None and not all(0 < a <= 500 for a in self.axes_mm):
            raise ValueError("axes_mm: half-axes must be in (0, 500] mm")
        return self

    def apply(self, layout: Layout) -> Layout:
        lm = layout.label_map
        size = lm.shape[0]
        if self.anchor is not None:
            _require_present(lm, "anchor", (self.anchor,))
            c, _evecs, evals = _principal(lm == label_id(self.anchor))
            if self.toward is not None:
                _require_present(lm, "toward", (self.toward,))
                c = c + self.fraction * (_centroid(lm, self.toward) - c)
            centre = ((c[0] + 0.5) / size, (c[1] + 0.5) / size)
        else:
            assert self.center is not None  # the validator gives exactly one of the two
            centre = self.center
            evals = np.ones(2)
        if self.size_rel is not None:
            axes_px = 2.0 * np.sqrt(evals[::-1]) * self.size_rel  # (major, minor)
        else:
            assert self.axes_mm is not None
            axes_px = np.array(self.axes_mm) * _px_per_mm(layout)
        shape = Shape(structure=self.structure, kind=self.kind, center=centre,
                      axes=(float(axes_px[0]) / size, float(axes_px[1]) / size),
                      angle=self.angle)
        mask = shape_mask(shape, size)
        new_labels = np.full_like(lm, label_id(self.structure))
        return layout.with_map(_paint(get_plane(layout.plane), lm, lm, mask, new_labels,
                                      [self.structure], self.within))


class Cut(_Edit):
    """Cut a gap across a structure, perpendicular to its major axis.

    The gap is centred on the structure's centroid, or on the projection of
    ``anchor``'s centroid onto the major axis, shifted by ``offset`` half-lengths.
    """

    op: Literal["cut"] = "cut"
    structure: str
    width_mm: float | None = Field(default=None, gt=0, le=100)
    width_frac: float | None = Field(default=None, gt=0, le=1)
    anchor: str | None = None
    offset: float = Field(default=0.0, ge=-1.5, le=1.5)
    fill: str | None = None

    @model_validator(mode="after")
    def _width(self) -> Cut:
        if (self.width_mm is None) == (self.width_frac is None):
            raise ValueError("cut: give exactly one of width_mm or width_frac")
        return self

    def apply(self, layout: Layout) -> Layout:
        lm = layout.label_map
        _require_present(lm, "structure", (self.structure,))
        mask = lm == label_id(self.structure)
        c, evecs, evals = _principal(mask)
        major = evecs[:, 1]
        half_len = math.sqrt(3.0 * evals[1])
        centre = c
        if self.anchor is not None:
            _require_present(lm, "anchor", (self.anchor,))
            centre = c + major * float(np.dot(_centroid(lm, self.anchor) - c, major))
        centre = centre + major * self.offset * half_len
        width_px = (self.width_mm * _px_per_mm(layout) if self.width_mm is not None
                    else (self.width_frac or 0.0) * 2 * half_len)
        yy, xx = np.mgrid[0:lm.shape[0], 0:lm.shape[1]]
        along = (xx - centre[0]) * major[0] + (yy - centre[1]) * major[1]
        gap = mask & (np.abs(along) <= max(width_px / 2.0, 0.75))
        out = _fill(lm, gap, self.fill)
        _keep_outside(lm, out)
        return layout.with_map(out)


Edit = Annotated[
    Remove | Scale | Translate | Rotate | Dilate | Erode | Insert | Cut,
    Field(discriminator="op"),
]
# cast: pydantic 2.14.4 types TypeAdapter(Annotated union) as a union of classes
EDIT_ADAPTER: TypeAdapter[Edit] = TypeAdapter(cast(Any, Edit))
EDIT_LIST_ADAPTER: TypeAdapter[list[Edit]] = TypeAdapter(list[Edit])
_EDIT_CLASSES: tuple[type[_Edit], ...] = (Remove, Scale, Translate, Rotate, Dilate, Erode,
                                          Insert, Cut)
# op name -> edit class (the discriminator's values)
EDIT_TYPES: dict[str, type[_Edit]] = {str(t.model_fields["op"].default): t
                                      for t in _EDIT_CLASSES}


def parse_edits(data: object) -> list[Edit]:
    """JSON-like data (one edit object or a list) -> edits, with field-named errors."""
    if isinstance(data, dict):
        data = [data]
    return EDIT_LIST_ADAPTER.validate_python(data)


# --------------------------------------------------------------------------- helpers


def _px_per_mm(layout: Layout) -> float:
    return 1.0 / layout.mm_per_px


def _ids(names: tuple[str, ...] | list[str] | set[str]) -> NDArray[np.uint8]:
    return np.array(sorted(label_id(n) for n in names), dtype=np.uint8)


def _require_present(lm: LabelMap, field: str, names: tuple[str, ...]) -> None:
    for n in names:
        if not (lm == label_id(n)).any():
            raise EditError(field, f"{n!r} is absent from this layout")


def _fill(lm: LabelMap, holes: NDArray[np.bool_], fill: str | None) -> LabelMap:
    """Fill ``holes`` with ``fill`` or with the nearest label outside holes (not background)."""
    out = lm.copy()
    if not holes.any():
        return out
    if fill is not None:
        out[holes] = label_id(fill)
        return out
    sources = ~holes & (lm != BACKGROUND)
    if not sources.any():
        raise EditError("fill", "no surrounding anatomy to fill the freed pixels from")
    _, (iy, ix) = ndimage.distance_transform_edt(~sources, return_indices=True)
    out[holes] = lm[iy[holes], ix[holes]]
    return out


def _principal(mask: NDArray[np.bool_]) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                                 NDArray[np.float64]]:
    """Centroid (x, y), eigenvectors (columns: minor, major) and eigenvalues of a mask."""
    ys, xs = np.nonzero(mask)
    c = np.array([xs.mean(), ys.mean()])
    if len(xs) < 2:
        return c, np.eye(2), np.ones(2)
    cov = np.cov(np.stack([xs - c[0], ys - c[1]])) + np.eye(2) / 12.0
    evals, evecs = np.linalg.eigh(cov)
    return c, evecs, evals


def _keep_outside(before: LabelMap, out: LabelMap) -> None:
    """Re-apply the input's own outside of the scan (its ``background``: our fan, an
    imported scan's sector, letterbox bands, or none) to an edit's result, in place."""
    out[before == BACKGROUND] = BACKGROUND


def _paint(
    p: Plane, before: LabelMap, base: LabelMap, new_mask: NDArray[np.bool_],
    new_labels: NDArray[np.uint8], moved: list[str], within: tuple[str, ...] | None,
) -> LabelMap:
    """Paint moved structures onto ``base`` honouring ``within`` and the z-order."""
    out = base.copy()
    allowed = base != BACKGROUND
    if within is not None:
        allowed &= np.isin(base, _ids(tuple(within) + tuple(moved)))
    paint = new_mask & allowed
    out[paint] = new_labels[paint]
    top = max(p.z_order(m) for m in moved)
    above = [s for s in p.structures if p.z_order(s) > top and s not in moved]
    if above:
        keep = np.isin(before, _ids(above))
        out[keep] = before[keep]
    _keep_outside(before, out)
    return out


def _affine(
    layout: Layout, names: tuple[str, ...], about: str, within: tuple[str, ...] | None,
    fill: str | None, matrix_for: MatrixFor,
) -> Layout:
    """Apply a per-unit affine map ``p' = c + A (p - c) + t`` to a group of structures."""
    p = get_plane(layout.plane)
    lm = layout.label_map
    group = np.isin(lm, _ids(names))
    size = lm.shape[0]
    if about == "group":
        units = [group]
    else:
        comps, n = ndimage.label(group)
        units = [comps == k for k in range(1, n + 1)]
    new_mask = np.zeros_like(group)
    new_labels = np.zeros_like(lm)
    # Each output pixel takes the label of the nearest group pixel to its source, so
    # holes (structures drawn on top, e.g. choroid inside the ventricle) move with it.
    _, (gy, gx) = ndimage.distance_transform_edt(~group, return_indices=True)
    nearest_group = lm[gy, gx]
    top = max(p.z_order(m) for m in names)
    above_mask = np.isin(lm, _ids([s for s in p.structures if p.z_order(s) > top]))
    yy, xx = np.mgrid[0:size, 0:size]
    pts = np.stack([xx.ravel(), yy.ravel()]).astype(np.float64)
    for unit in units:
        c, evecs, evals = _principal(unit)
        a_mat, t = matrix_for(c, evecs, evals)
        inv = np.linalg.inv(a_mat)
        src = c[:, None] + inv @ (pts - c[:, None] - t[:, None])
        # The unit's full extent includes what occludes it: holes and touching structures
        # drawn above it (the choroid plexus inside the ventricle's atrium).
        touching = np.zeros_like(unit)
        if above_mask.any():
            comps, n = ndimage.label(above_mask)
            ids = np.unique(comps[ndimage.binary_dilation(unit) & above_mask])
            touching = np.isin(comps, ids[ids > 0])
        filled = ndimage.binary_fill_holes(unit | touching).astype(np.float32)
        # A slightly blurred mask, interpolated, keeps scaled edges smooth (no stairs).
        filled = ndimage.gaussian_filter(filled, 0.7)
        hit = ndimage.map_coordinates(filled, [src[1], src[0]], order=1, cval=0.0) >= 0.5
        hit2 = hit.reshape(size, size)
        sx = np.clip(np.rint(src[0]), 0, size - 1).astype(np.intp)
        sy = np.clip(np.rint(src[1]), 0, size - 1).astype(np.intp)
        lab = nearest_group[sy, sx].reshape(size, size)
        new_mask |= hit2
        new_labels[hit2] = lab[hit2]
    base = _fill(lm, group, fill)
    return layout.with_map(_paint(p, lm, base, new_mask, new_labels, list(names), within))


def _centroid(lm: LabelMap, name: str) -> NDArray[np.float64]:
    ys, xs = np.nonzero(lm == label_id(name))
    return np.array([xs.mean(), ys.mean()])


# --------------------------------------------------------------------------- apply


def apply_edit(layout: Layout, edit: Edit) -> Layout:
    """``edit`` applied to ``layout`` (each edit class applies itself)."""
    edit.check_plane(get_plane(layout.plane))
    return edit.apply(layout)


def apply_edits(layout: Layout, edits: list[Edit]) -> Layout:
    """Apply edits in order; ``edits[i]`` failures are reported with their index."""
    out = layout
    for i, e in enumerate(edits):
        try:
            out = apply_edit(out, e)
        except EditError as exc:
            raise EditError(f"edits[{i}].{exc.field}", f"({e.op}) {exc.reason}") from None
    return out
