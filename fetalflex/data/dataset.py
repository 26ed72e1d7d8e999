"""PyTorch Dataset over a manifest: (image, layout channels, plane, GA) per item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fetalflex.anatomy.layout import one_hot
from fetalflex.anatomy.planes import plane_index
from fetalflex.data.manifest import Record, read_manifest, resolve
from fetalflex.io.png import read_gray, read_label_map


class PhantomDataset(Dataset[dict[str, torch.Tensor]]):
    """Items: ``image`` (1,H,W) in [-1, 1], ``layout`` (K,H,W) one-hot, ``label_map`` (H,W),
    ``plane`` () long, ``ga`` () float (weeks, NaN when unknown)."""

    def __init__(self, manifest: Path, include_abnormal: bool = False,
                 check_files: bool = True) -> None:
        self.root = manifest.parent
        recs = read_manifest(manifest, check_files=check_files)
        self.records: list[Record] = [r for r in recs if include_abnormal or not r.abnormal]
        if not self.records:
            raise ValueError(f"{manifest}: no usable records (abnormal ones are excluded)")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.records[i]
        img = read_gray(resolve(self.root, r.image)).astype(np.float32) / 127.5 - 1.0
        lab = read_label_map(resolve(self.root, r.label_map))
        return {
            "image": torch.from_numpy(img)[None],
            "layout": torch.from_numpy(one_hot(lab)),
            "label_map": torch.from_numpy(lab.astype(np.int64)),
            "plane": torch.tensor(plane_index(r.plane), dtype=torch.long),
            "ga": torch.tensor(float("nan") if r.ga_weeks is None else r.ga_weeks,
                               dtype=torch.float32),
        }
