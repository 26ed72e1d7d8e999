"""A small image classifier for the downstream-utility experiments, and its scores.

Plain PyTorch: four conv blocks, global average pooling, one linear head. Trained with
class-weighted cross-entropy, random shifts (+-3 px) and gain jitter, AdamW with one-cycle
learning rate, a fixed number of steps whatever the set size (no early stopping on the test
set). ``features`` gives the pooled embedding used by the
Mahalanobis anomaly score. Everything here runs on the CPU in seconds at 64x64.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import rankdata
from torch import Tensor, nn

from fetalflex.io import pixels


class SmallCNN(nn.Module):
    def __init__(self, n_classes: int, width: int = 16) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        blocks: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                       nn.MaxPool2d(2)]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(chans[-1], n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 400
    batch_size: int = 32
    lr: float = 2e-3
    max_shift: int = 3
    seed: int = 0


def _to_input(images: NDArray[np.uint8]) -> Tensor:
    return torch.from_numpy(pixels.to_unit(images))[:, None]


def _augment(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    if max_shift > 0:
        dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gain = 1.0 + 0.1 * (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5)
    return ((x + 1) * gain - 1).clamp(-1, 1)


def train_classifier(images: NDArray[np.uint8], labels: NDArray[np.int64], n_classes: int,
                     options: TrainOptions = TrainOptions()) -> SmallCNN:
    """Train from scratch; classes are weighted by inverse frequency."""
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"images: expected (N, H, W) matching {len(labels)} labels, "
                         f"got {images.shape}")
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(f"labels: every class needs examples, counts {counts.tolist()}")
    gen = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    model = SmallCNN(n_classes)
    x_all, y_all = _to_input(images), torch.from_numpy(labels.astype(np.int64))
    weight = torch.tensor(len(labels) / (n_classes * counts), dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, options.lr, total_steps=options.steps)
    model.train()
    for _ in range(options.steps):
        idx = torch.randint(0, len(labels), (min(options.batch_size, len(labels)),),
                            generator=gen)
        logits = model(_augment(x_all[idx], options.max_shift, gen))
        loss = nn.functional.cross_entropy(logits, y_all[idx], weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


@torch.no_grad()
def predict_proba(model: SmallCNN, images: NDArray[np.uint8], batch: int = 256
                  ) -> NDArray[np.float64]:
    x = _to_input(images)
    out = [torch.softmax(model(x[i:i + batch]), dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out).double().numpy()


@torch.no_grad()
def features(model: SmallCNN, images: NDArray[np.uint8], batch: int = 256
             ) -> NDArray[np.float64]:
    x = _to_input(images)
    return torch.cat([model.features(x[i:i + batch])
                      for i in range(0, len(x), batch)]).double().numpy()


class GaussianScore:
    """Mahalanobis distance to a Gaussian fitted on normal features (shrunk covariance),
    the anomaly-detection baseline of Lee et al. (2018) on a single layer."""

    def __init__(self, feats: NDArray[np.float64], shrinkage: float = 0.1) -> None:
        if len(feats) < 2:
            raise ValueError("feats: need at least two normal examples")
        self.mean = feats.mean(axis=0)
        cov = np.cov(feats, rowvar=False)
        cov = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
        self.precision = np.linalg.inv(cov)

    def __call__(self, feats: NDArray[np.float64]) -> NDArray[np.float64]:
        d = feats - self.mean
        return np.einsum("ij,jk,ik->i", d, self.precision, d)


def auc(scores: NDArray[np.float64], positive: NDArray[np.bool_]) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    pos = np.asarray(positive, bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("positive: AUC needs both classes")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_interval(scores: NDArray[np.float64] | list[NDArray[np.float64]],
                 positive: NDArray[np.bool_], reps: int = 1000, seed: int = 0
                 ) -> tuple[float, float]:
    """95% bootstrap interval of the AUC over the test set (classes resampled separately).
    Given several score arrays (one per training seed), of the mean AUC over them."""
    runs = scores if isinstance(scores, list) else [scores]
    rng = np.random.default_rng(seed)
    positive = np.asarray(positive, bool)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    vals = []
    for _ in range(reps):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        vals.append(float(np.mean([auc(sc[idx], positive[idx]) for sc in runs])))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)
