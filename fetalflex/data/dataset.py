"""PyTorch Dataset over a manifest: (image, layout channels, plane, GA) per item.

Two layout renderings, both first-class (DESIGN.md "Anatomy"): the label map itself, or
the structure-list rendering, where every structure becomes its fitted oriented box (as a
detector's boxes would give). ``box_prob`` picks the box rendering at random in training.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fetalflex.anatomy.layout import Layout, Shape, StructureList, extract, one_hot, rasterize
from fetalflex.anatomy.planes import plane_index
from fetalflex.data.manifest import Record, read_manifest, resolve
from fetalflex.io import pixels
from fetalflex.io.png import read_gray, read_label_map


def box_rendering(layout: Layout) -> np.ndarray:
    """The structure-list form of a layout as boxes, rasterized back to a label map."""
    sl = extract(layout)
    boxes = tuple(Shape(structure=s.structure, kind="box", center=s.center,
                        axes=(s.axes[0] * (0.8862 if s.kind == "ellipse" else 1.0),
                              s.axes[1] * (0.8862 if s.kind == "ellipse" else 1.0)),
                        angle=s.angle) for s in sl.structures)
    # An equal-area box (sqrt(pi)/2 per axis) keeps structure sizes comparable.
    out = rasterize(StructureList(plane=sl.plane, field_mm=sl.field_mm, ga_weeks=sl.ga_weeks,
                                  structures=boxes), layout.size)
    return out.label_map


class PhantomDataset(Dataset[dict[str, torch.Tensor]]):
    """Items: ``image`` (1,H,W) in [-1, 1], ``layout`` (K,H,W) one-hot, ``label_map`` (H,W),
    ``plane`` () long, ``ga`` () float (weeks, NaN when unknown).

    ``preload`` keeps every image and label map in memory (uint8) and precomputes the
    box renderings when ``box_prob > 0``.
    """

    def __init__(self, manifest: Path, include_abnormal: bool = False,
                 check_files: bool = True, box_prob: float = 0.0, preload: bool = False,
                 seed: int = 0) -> None:
        if not 0.0 <= box_prob <= 1.0:
            raise ValueError(f"box_prob: must be within [0, 1], got {box_prob}")
        self.root = manifest.parent
        recs = read_manifest(manifest, check_files=check_files)
        self.records: list[Record] = [r for r in recs if include_abnormal or not r.abnormal]
        if not self.records:
            raise ValueError(f"{manifest}: no usable records (abnormal ones are excluded)")
        self.box_prob = box_prob
        self.include_abnormal = include_abnormal
        self._rng = np.random.default_rng(seed)
        self._cache: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None
        if preload:
            self._cache = self._preloaded(manifest)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        r = self.records[i]
        img = read_gray(resolve(self.root, r.image))
        lab = read_label_map(resolve(self.root, r.label_map))
        boxes = None
        if self.box_prob > 0:
            boxes = box_rendering(r.layout(lab))
        return img, lab, boxes

    def _preloaded(self, manifest: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Every item in memory. The arrays (with the box renderings, the slow part: ~13 ms
        per 128^2 item) are kept in ``.preload/`` beside the manifest, keyed by the manifest's
        content and the options, so a resumed training run does not redo them."""
        key = hashlib.sha256(manifest.read_bytes())
        key.update(f"abnormal={self.include_abnormal};boxes={self.box_prob > 0}".encode())
        path = manifest.parent / ".preload" / f"{manifest.stem}-{key.hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as z:
                imgs, labs = z["images"], z["labels"]
                boxes = z["boxes"] if "boxes" in z.files else None
            if len(imgs) == len(self.records):
                return [(imgs[i], labs[i], None if boxes is None else boxes[i])
                        for i in range(len(imgs))]
        items = [self._load(i) for i in range(len(self.records))]
        try:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
            arrays: dict[str, Any] = {"images": np.stack([x[0] for x in items]),
                                      "labels": np.stack([x[1] for x in items])}
            if self.box_prob > 0:
                arrays["boxes"] = np.stack([x[2] for x in items if x[2] is not None])
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        except (OSError, ValueError):
            pass  # a read-only data folder or ragged sizes: no cache, same items
        return items

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.records[i]
        img, lab, boxes = self._cache[i] if self._cache is not None else self._load(i)
        use_boxes = boxes is not None and self._rng.random() < self.box_prob
        cond_map = boxes if use_boxes and boxes is not None else lab
        return {
            "image": torch.from_numpy(pixels.to_unit(img))[None],
            "layout": torch.from_numpy(one_hot(cond_map)),
            "label_map": torch.from_numpy(lab.astype(np.int64)),
            "plane": torch.tensor(plane_index(r.plane), dtype=torch.long),
            "ga": torch.tensor(float("nan") if r.ga_weeks is None else r.ga_weeks,
                               dtype=torch.float32),
        }
