"""The real scans an evaluation reads: imported records (``fetalflex import``) as arrays.

Only ``appearance: real`` records are read; ``split`` decides the side (train: instruments
are trained on it; val: everything is measured on it, never trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fetalflex.anatomy.layout import Layout, Shape, shape_mask
from fetalflex.data.manifest import Record, read_manifest, resolve
from fetalflex.io.png import read_gray, read_label_map

# Plane groups of the realism figures: the three head planes are one group (their scans
# differ in a few structures; per-plane groups of 20 validation scans are too small for a
# Frechet distance).
PLANE_GROUPS: dict[str, tuple[str, ...]] = {
    "head (TV/TT/TC)": ("TV", "TT", "TC"), "abdomen (AC)": ("AC",),
    "heart (4CH)": ("4CH",), "femur (FL)": ("FL",),
}


@dataclass
class RealSet:
    """Arrays of one split (index i is record i)."""

    records: list[Record]
    images: NDArray[np.uint8]
    label_maps: NDArray[np.uint8]

    @property
    def planes(self) -> NDArray[np.str_]:
        return np.array([r.plane for r in self.records])

    @property
    def subjects(self) -> list[str]:
        return [r.subject or f"#{i}" for i, r in enumerate(self.records)]

    def layout(self, i: int) -> Layout:
        return self.records[i].layout(self.label_maps[i])

    def subset(self, idx: NDArray[np.int64] | list[int]) -> RealSet:
        ii = list(idx)
        return RealSet([self.records[i] for i in ii], self.images[ii], self.label_maps[ii])

    def with_head(self) -> NDArray[np.int64]:
        """Indices of records with a head outline (HC18)."""
        return np.array([i for i, r in enumerate(self.records) if head_shape(r) is not None],
                        dtype=np.int64)


def head_shape(record: Record) -> Shape | None:
    """The head outline a record was drawn from (a skull ``ring``), if any."""
    for s in record.structures or []:
        shape = Shape.model_validate(s)
        if shape.structure == "skull" and shape.kind == "ring":
            return shape
    return None


def head_mask(shape: Shape, size: int) -> NDArray[np.bool_]:
    """The filled head (inside the outline) at ``size``."""
    return shape_mask(shape.model_copy(update={"kind": "ellipse"}), size)


def load_real(manifests: list[Path], split: str) -> RealSet:
    recs: list[Record] = []
    imgs: list[NDArray[np.uint8]] = []
    labs: list[NDArray[np.uint8]] = []
    for m in manifests:
        for r in read_manifest(m, check_files=False):
            if r.appearance != "real" or r.split != split:
                continue
            recs.append(r)
            imgs.append(read_gray(resolve(m.parent, r.image)))
            labs.append(read_label_map(resolve(m.parent, r.label_map)))
    if not recs:
        raise ValueError(f"data: no real records of split {split!r} in "
                         f"{', '.join(map(str, manifests))} (import them with "
                         f"`fetalflex import hc18|fpdb|folder`)")
    return RealSet(recs, np.stack(imgs), np.stack(labs))
