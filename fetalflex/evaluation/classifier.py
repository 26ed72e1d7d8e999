"""The image classifiers (readers) of the downstream-utility experiments, and their scores.

Plain PyTorch, two readers (``options.READERS``):

* ``small``: four conv blocks and global average pooling. Its receptive field is 46 px: most
  of a 64 x 64 image, a third of a 128 x 128 one. The reader of every run up to v3.
* ``wide``: a strided 4x4 stem and five conv blocks (receptive field 190 px, the whole of a
  128 x 128 plane), global average and max pooling side by side (a small local sign such as
  a cleft is not averaged away), dropout before the head.

Both are trained with random shifts and gain jitter (``wide`` also left-right flips), AdamW
with a one-cycle learning rate, a fixed number of steps whatever the set size (no early
stopping on the test set), under bfloat16 autocast where the CPU has native bfloat16.
``small`` weights the cross-entropy by inverse class frequency (peak learning rate 2e-3);
``wide`` draws class-balanced batches (peak 1e-3). At 2e-3 with weighted random batches
one ``wide`` training seed in three stayed at chance on the rarer twin sets: its training
loss never left ln 2 (docs/EVALUATION.md, "the reader was the limit"). ``features`` gives
the pooled embedding used by the Mahalanobis anomaly score.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import rankdata
from torch import Tensor, nn

from fetalflex.evaluation.options import DEFAULT_READER, READERS
from fetalflex.io import pixels
from fetalflex.model.hardware import bf16_native
from fetalflex.request import require_one_of


class _Halve(nn.Module):
    """2x2 max pooling that leaves a map of side 1 as it is (tiny test images)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.max_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x


class Reader(nn.Module):
    """``reader``: ``small`` or ``wide`` (see the module's docstring)."""

    def __init__(self, n_classes: int, reader: str = DEFAULT_READER) -> None:
        super().__init__()
        require_one_of("reader", reader, READERS)
        self.reader = reader
        blocks: list[nn.Module] = []
        if reader == "small":
            chans = [1, 16, 32, 64, 64]
        else:
            chans = [24, 32, 64, 96, 128, 128]
            blocks += [nn.Conv2d(1, chans[0], 4, stride=2, padding=1),
                       nn.GroupNorm(4, chans[0]), nn.SiLU()]
        for cin, cout in itertools.pairwise(chans):
            blocks += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                       _Halve()]
        self.body = nn.Sequential(*blocks)
        n_feat = chans[-1] * (1 if reader == "small" else 2)
        self.head: nn.Module = (nn.Linear(n_feat, n_classes) if reader == "small" else
                                nn.Sequential(nn.Dropout(0.2), nn.Linear(n_feat, n_classes)))

    def receptive_field(self) -> int:
        """Side in pixels of the input square one pooled feature-map cell sees."""
        field, jump = 1, 1
        for mod in self.body:
            if isinstance(mod, nn.Conv2d):
                field += (mod.kernel_size[0] - 1) * jump
                jump *= mod.stride[0]
            elif isinstance(mod, _Halve):
                field += jump
                jump *= 2
        return field

    def features(self, x: Tensor) -> Tensor:
        h = self.body(x)
        if self.reader == "small":
            return h.mean(dim=(2, 3))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class Recipe:
    """A reader's training recipe with every default filled in."""

    lr: float         # peak of the one-cycle schedule
    balanced: bool    # class-balanced batches (else inverse-frequency loss weights)
    max_shift: int    # random shifts of up to +-max_shift px
    flip: bool        # random left-right flips
    bf16: bool        # bfloat16 autocast


# Each reader's own recipe; bf16 is on wherever the CPU has native bfloat16.
READER_RECIPES: dict[str, dict[str, Any]] = {
    "small": {"lr": 2e-3, "balanced": False, "max_shift": 3, "flip": False},
    "wide": {"lr": 1e-3, "balanced": True, "max_shift": 6, "flip": True},
}


@dataclass(frozen=True)
class TrainOptions:
    steps: int = 600
    batch_size: int = 32
    seed: int = 0
    reader: str = DEFAULT_READER
    # None: the reader's own (READER_RECIPES)
    lr: float | None = None
    balanced: bool | None = None
    max_shift: int | None = None
    flip: bool | None = None
    bf16: bool | None = None
    # With ``train_classifier(..., first=mask)``: the share of every batch drawn from the
    # examples the mask marks (e.g. the real scans among many generated ones), the rest from
    # the others, each part drawn as the recipe says; None: one pool.
    first_share: float | None = None

    def __post_init__(self) -> None:
        if self.first_share is not None and not 0.0 < self.first_share < 1.0:
            raise ValueError(f"first_share: must be within (0, 1), got {self.first_share}")

    def recipe(self) -> Recipe:
        """The recipe with the reader's defaults filled in."""
        require_one_of("reader", self.reader, READERS)
        own = {**READER_RECIPES[self.reader], "bf16": bf16_native()}
        given = {name: getattr(self, name) for name in own}
        return Recipe(**{name: own[name] if given[name] is None else given[name]
                         for name in own})


def _to_input(images: NDArray[np.uint8]) -> Tensor:
    return torch.from_numpy(pixels.to_unit(images))[:, None]


def _augment(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    if max_shift > 0:
        dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gain = 1.0 + 0.1 * (torch.rand(x.shape[0], 1, 1, 1, generator=gen) - 0.5)
    return ((x + 1) * gain - 1).clamp(-1, 1)


class BatchSampler:
    """Indices of training batches: uniform over the examples, or (``balanced``) the classes
    taken in turn from a random order, each example drawn uniformly within its class (a
    binary batch of 32 holds 16 of each, however rare one class is)."""

    def __init__(self, labels: NDArray[np.int64], n_classes: int, balanced: bool) -> None:
        self.n, self.n_classes, self.balanced = len(labels), n_classes, balanced
        self.order = torch.from_numpy(np.argsort(labels, kind="stable"))
        self.counts = torch.from_numpy(np.bincount(labels, minlength=n_classes))
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def __call__(self, batch: int, gen: torch.Generator) -> Tensor:
        if not self.balanced:
            return torch.randint(0, self.n, (batch,), generator=gen)
        cls = torch.randperm(self.n_classes, generator=gen).repeat(
            batch // self.n_classes + 1)[:batch]
        pick = (torch.rand(batch, generator=gen) * self.counts[cls]).long()
        return self.order[self.starts[cls] + pick]


def mixed_batch_counts(batch: int, share: float) -> tuple[int, int]:
    """(from the marked group, from the others) in a mixed batch: ``share`` of it rounded,
    at least one and at most all but one."""
    n_first = min(batch - 1, max(1, round(batch * share)))
    return n_first, batch - n_first


class MixedSampler:
    """Class-balanced batches of which ``share`` (rounded, at least one example and at most
    all but one) come from the ``first`` group and the rest from the others, each group
    drawn by its own ``BatchSampler``."""

    def __init__(self, labels: NDArray[np.int64], n_classes: int,
                 first: NDArray[np.bool_], share: float) -> None:
        self.share = share
        self.groups = [torch.from_numpy(np.nonzero(m)[0]) for m in (first, ~first)]
        for name, g in zip(("marked", "other"), self.groups, strict=True):
            lack = sorted(set(range(n_classes)) - set(labels[g.numpy()].tolist()))
            if lack:
                raise ValueError(f"first: the {name} examples lack classes {lack}; each "
                                 f"group needs examples of every class")
        self.samplers = [BatchSampler(labels[g.numpy()], n_classes, True)
                         for g in self.groups]

    def __call__(self, batch: int, gen: torch.Generator) -> Tensor:
        return torch.cat([g[s(n, gen)] for g, s, n in zip(
            self.groups, self.samplers, mixed_batch_counts(batch, self.share), strict=True)])


def train_classifier(images: NDArray[np.uint8], labels: NDArray[np.int64], n_classes: int,
                     options: TrainOptions = TrainOptions(),
                     first: NDArray[np.bool_] | None = None) -> Reader:
    """Train from scratch with the reader's recipe (``TrainOptions.recipe``); ``first``
    with ``options.first_share``: that share of every batch from the marked examples."""
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"images: expected (N, H, W) matching {len(labels)} labels, "
                         f"got {images.shape}")
    counts = np.bincount(labels, minlength=n_classes)
    if (counts == 0).any():
        raise ValueError(f"labels: every class needs examples, counts {counts.tolist()}")
    r = options.recipe()
    gen = torch.Generator().manual_seed(options.seed)
    torch.manual_seed(options.seed)
    model = Reader(n_classes, options.reader)
    x_all, y_all = _to_input(images), torch.from_numpy(labels.astype(np.int64))
    weight = (None if r.balanced else
              torch.tensor(len(labels) / (n_classes * counts), dtype=torch.float32))
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, r.lr, total_steps=options.steps)
    batch = min(options.batch_size, len(labels))
    sampler: BatchSampler | MixedSampler = BatchSampler(labels, n_classes, r.balanced)
    if options.first_share is not None:
        if (first is None or first.dtype != np.bool_ or first.shape != labels.shape
                or first.all() or not first.any()):
            raise ValueError("first: first_share needs a boolean mask over the examples "
                             "marking some but not all of them")
        if not r.balanced or batch < 2:
            raise ValueError("first_share: needs class-balanced batches of at least 2 (the "
                             "'wide' reader's recipe, or balanced=True)")
        sampler = MixedSampler(labels, n_classes, first, options.first_share)
    model.train()
    for _ in range(options.steps):
        idx = sampler(batch, gen)
        xb = _augment(x_all[idx], r.max_shift, gen)
        if r.flip:
            xb = torch.where(torch.rand(len(xb), 1, 1, 1, generator=gen) < 0.5, xb.flip(3), xb)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=r.bf16):
            logits = model(xb)
        loss = nn.functional.cross_entropy(logits.float(), y_all[idx], weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    return model


@torch.no_grad()
def predict_proba(model: Reader, images: NDArray[np.uint8], batch: int = 256
                  ) -> NDArray[np.float64]:
    x = _to_input(images)
    out = [torch.softmax(model(x[i:i + batch]), dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out).double().numpy()


@torch.no_grad()
def features(model: Reader, images: NDArray[np.uint8], batch: int = 256
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
