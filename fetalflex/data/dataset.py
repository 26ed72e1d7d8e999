"""PyTorch Dataset over a manifest: (image, layout channels, plane, GA) per item.

Two layout renderings, both first-class (DESIGN.md "Anatomy"): the label map itself, or
the structure-list rendering, where every structure becomes its fitted oriented box (as a
detector's boxes would give). ``box_prob`` picks the box rendering at random in training.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fetalflex.anatomy.layout import Layout, Shape, extract, one_hot, rasterize
from fetalflex.anatomy.planes import plane_index
from fetalflex.anatomy.structures import BACKGROUND, UNLABELLED
from fetalflex.appearance import APPEARANCES
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
    # An equal-area box (sqrt(pi)/2 per axis) keeps structure sizes comparable. The outside
    # of the scan is the layout's own (our fan for phantoms, an imported scan's sector).
    out = rasterize(sl.model_copy(update={"structures": boxes, "sector": "none"}),
                    layout.size).label_map.copy()
    out[layout.label_map == BACKGROUND] = BACKGROUND
    return out


Item = tuple[np.ndarray, np.ndarray, np.ndarray | None]
PARALLEL_MIN_ITEMS = 256  # below this, starting worker processes costs more than it saves


def load_item(root: Path, record: Record, boxes: bool) -> Item:
    """One record's image, label map and (when ``boxes``) box rendering, as uint8 arrays.
    A partial label map (unlabelled pixels) is its own box rendering: its few structures
    are outlines already, and boxes fitted to them would say more than was labelled."""
    img = read_gray(resolve(root, record.image))
    lab = read_label_map(resolve(root, record.label_map))
    if boxes and bool((lab == UNLABELLED).any()):
        return img, lab, lab
    return img, lab, box_rendering(record.layout(lab)) if boxes else None


def _load_chunk(args: tuple[Path, list[Record], bool]) -> list[Item]:
    root, records, boxes = args
    return [load_item(root, r, boxes) for r in records]


class PhantomDataset(Dataset[dict[str, torch.Tensor]]):
    """Items: ``image`` (1,H,W) in [-1, 1], ``layout`` (K,H,W) one-hot (all zeros where
    unlabelled), ``label_map`` (H,W), ``plane`` () long, ``ga`` () float (weeks, NaN when
    unknown), ``appearance`` () long (index into ``appearance.APPEARANCES``).

    ``preload`` keeps every image and label map in memory (uint8) and precomputes the
    box renderings when ``box_prob > 0``, with ``workers`` processes (0: all cores, at most
    16; the box renderings cost ~13 ms per 128^2 item, minutes for a training set on one).
    """

    def __init__(self, manifest: Path, include_abnormal: bool = False,
                 check_files: bool = True, box_prob: float = 0.0, preload: bool = False,
                 seed: int = 0, workers: int = 0) -> None:
        if not 0.0 <= box_prob <= 1.0:
            raise ValueError(f"box_prob: must be within [0, 1], got {box_prob}")
        self.root = manifest.parent
        recs = read_manifest(manifest, check_files=check_files)
        # Validation records are never trained on (manifest "split": "val").
        self.records: list[Record] = [r for r in recs if (include_abnormal or not r.abnormal)
                                      and r.split != "val"]
        if not self.records:
            raise ValueError(f"{manifest}: no usable records (abnormal and validation "
                             f"records are excluded)")
        self.box_prob = box_prob
        self.include_abnormal = include_abnormal
        self._rng = np.random.default_rng(seed)
        self._cache: list[Item] | None = None
        self._workers = workers or min(os.cpu_count() or 1, 16)
        if preload:
            self._cache = self._preloaded(manifest)

    def _load(self, i: int) -> Item:
        return load_item(self.root, self.records[i], self.box_prob > 0)

    def _load_all(self) -> list[Item]:
        boxes = self.box_prob > 0
        n = len(self.records)
        if self._workers <= 1 or n < PARALLEL_MIN_ITEMS:
            return _load_chunk((self.root, self.records, boxes))
        size = -(-n // (self._workers * 4))
        chunks = [(self.root, self.records[i:i + size], boxes) for i in range(0, n, size)]
        # spawn, not fork: the caller may already hold CUDA or thread pools.
        with ProcessPoolExecutor(self._workers, mp_context=mp.get_context("spawn")) as ex:
            return [item for part in ex.map(_load_chunk, chunks) for item in part]

    @property
    def preloaded(self) -> list[Item] | None:
        """The in-memory items (image, label map, box rendering or None), or None."""
        return self._cache

    def _preloaded(self, manifest: Path) -> list[Item]:
        """Every item in memory. The arrays (with the box renderings, the slow part: ~13 ms
        per 128^2 item) are kept in ``.preload/`` beside the manifest, keyed by the manifest's
        content, every file's size and modification time (a re-import that rewrites the
        label maps under the same manifest is loaded again) and the options, so a resumed
        training run does not redo them."""
        key = hashlib.sha256(manifest.read_bytes())
        key.update(f"abnormal={self.include_abnormal};boxes={self.box_prob > 0}".encode())
        for r in self.records:
            for f in (r.image, r.label_map):
                st = resolve(manifest.parent, f).stat()
                key.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
        path = manifest.parent / ".preload" / f"{manifest.stem}-{key.hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as z:
                imgs, labs = z["images"], z["labels"]
                boxes = z["boxes"] if "boxes" in z.files else None
            if len(imgs) == len(self.records):
                return [(imgs[i], labs[i], None if boxes is None else boxes[i])
                        for i in range(len(imgs))]
        items = self._load_all()
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
            "appearance": torch.tensor(APPEARANCES.index(r.appearance), dtype=torch.long),
        }
