"""Training batches drawn from a preloaded data set held as uint8 tensors on the device.

The per-item path (``PhantomDataset.__getitem__`` through a ``DataLoader``) builds every
sample's one-hot layout on the host: 35 x 128 x 128 float32, 2.3 MB per sample, about 6 ms of
one core. A GPU step of the 5 M-parameter denoiser at batch 256 takes less than the loader
needs for one batch, and the host-to-device copy of the one-hot layouts is 0.6 GB a step.
Here the whole set lives on the device as uint8 (16,000 items at 128^2: 0.8 GB with the box
renderings), and a batch is an index gather, the box/label-map choice, ``one_hot`` and the
pixel scaling, all on the device. Same items, same value ranges, same box probability and
the same epoch order semantics (a permutation per epoch, the last partial batch dropped,
ranks take disjoint strides) as the loader path; ``tests/model/test_training_fast_path.py``
checks the tensors against ``__getitem__``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from fetalflex.anatomy.layout import NUM_LABELS
from fetalflex.anatomy.planes import plane_index
from fetalflex.anatomy.structures import UNLABELLED
from fetalflex.appearance import APPEARANCES
from fetalflex.data.dataset import PhantomDataset
from fetalflex.io.pixels import SCALE


class ResidentBatches:
    """Endless batches of ``image``, ``layout``, ``label_map``, ``plane``, ``ga``."""

    def __init__(self, ds: PhantomDataset, batch_size: int, device: torch.device,
                 seed: int = 0, rank: int = 0, world: int = 1,
                 weights: torch.Tensor | None = None) -> None:
        items = ds.preloaded
        if items is None:
            raise ValueError("batching: 'resident' needs the data set preloaded (preload: true)")
        if len(items) // world < batch_size:
            raise ValueError(f"batch_size: {batch_size} is more than the {len(items) // world} "
                             f"items each of {world} process(es) gets")
        self.n, self.batch_size, self.device = len(items), batch_size, device
        self.rank, self.world = rank, world
        self.box_prob = ds.box_prob
        self.images = torch.from_numpy(np.stack([x[0] for x in items])).to(device)
        self.labels = torch.from_numpy(np.stack([x[1] for x in items])).to(device)
        # The preload holds a box rendering per item exactly when box_prob > 0.
        boxes = [b for _, _, b in items if b is not None]
        self.boxes = torch.from_numpy(np.stack(boxes)).to(device) if boxes else None
        said = [t[t != UNLABELLED] for t in (self.labels, self.boxes) if t is not None]
        top = max(int(t.max()) if t.numel() else 0 for t in said)
        if top >= NUM_LABELS:
            raise ValueError(f"label_map: id {top} >= num_labels {NUM_LABELS}")
        self.plane = torch.tensor([plane_index(r.plane) for r in ds.records],
                                  dtype=torch.long, device=device)
        self.ga = torch.tensor([float("nan") if r.ga_weeks is None else r.ga_weeks
                                for r in ds.records], dtype=torch.float32, device=device)
        self.appearance = torch.tensor([APPEARANCES.index(r.appearance) for r in ds.records],
                                       dtype=torch.long, device=device)
        self.gen = torch.Generator().manual_seed(seed)
        self.weights = weights

    def indices(self) -> Iterator[Tensor]:
        """Index batches: one permutation per epoch, this rank's stride, partial batch dropped
        (with ``weights``: an epoch's worth of draws with replacement by those weights)."""
        while True:
            if self.weights is not None:
                perm = torch.multinomial(self.weights, self.n, replacement=True,
                                         generator=self.gen)[self.rank::self.world]
            else:
                perm = torch.randperm(self.n, generator=self.gen)[self.rank::self.world]
            for i in range(0, len(perm) - self.batch_size + 1, self.batch_size):
                yield perm[i:i + self.batch_size]

    def batch(self, idx: Tensor) -> dict[str, Tensor]:
        use_boxes = torch.rand(len(idx), generator=self.gen) < self.box_prob
        idx = idx.to(self.device)
        labels = self.labels[idx]
        cond = labels
        if self.boxes is not None:
            cond = torch.where(use_boxes.to(self.device)[:, None, None], self.boxes[idx], labels)
        # Unlabelled pixels (255) -> an extra class that is cut off: all-zero channels.
        cond = torch.where(cond == UNLABELLED, NUM_LABELS, cond.long())
        layout = torch.nn.functional.one_hot(cond, NUM_LABELS + 1)[..., :NUM_LABELS]
        layout = layout.permute(0, 3, 1, 2)
        return {"image": (self.images[idx].float() / SCALE - 1.0)[:, None],
                "layout": layout.float().contiguous(),
                "label_map": labels.long(), "plane": self.plane[idx], "ga": self.ga[idx],
                "appearance": self.appearance[idx]}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return (self.batch(idx) for idx in self.indices())
