"""The downstream classifier, AUC and the Mahalanobis score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fetalflex.evaluation.classifier import (
    BatchSampler,
    GaussianScore,
    MixedSampler,
    Reader,
    Recipe,
    TrainOptions,
    auc,
    auc_interval,
    predict_proba,
    train_classifier,
)
from fetalflex.evaluation.options import READERS


def test_auc_known_values() -> None:
    pos = np.array([False, False, True, True])
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), pos) == 1.0
    assert auc(np.array([0.9, 0.8, 0.2, 0.1]), pos) == 0.0
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), pos) == 0.5
    # one inversion of four pairs
    assert auc(np.array([0.1, 0.85, 0.8, 0.9]), pos) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="positive"):
        auc(np.array([0.1, 0.2]), np.array([True, True]))


def test_auc_interval_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    pos = np.arange(200) >= 100
    scores = rng.normal(size=200) + pos * 1.0
    lo, hi = auc_interval(scores, pos, reps=200)
    assert lo < auc(scores, pos) < hi
    assert lo > 0.5 and hi < 1.0


def test_gaussian_score_ranks_outliers_higher() -> None:
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(300, 4))
    score = GaussianScore(normal)
    inl, out = rng.normal(size=(50, 4)), rng.normal(size=(50, 4)) + 3.0
    assert auc(np.concatenate([score(inl), score(out)]), np.arange(100) >= 50) > 0.95


@pytest.mark.parametrize("reader", READERS)
def test_classifier_learns_a_visible_difference(reader: str) -> None:
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 60, size=(64, 32, 32)).astype(np.uint8)
    labels = np.arange(64) % 2
    imgs[labels == 1, 8:24, 8:24] += 150  # a bright square: the "anomaly"
    m = train_classifier(imgs, labels, 2, TrainOptions(steps=60, seed=0, reader=reader))
    test = rng.integers(0, 60, size=(20, 32, 32)).astype(np.uint8)
    ty = np.arange(20) % 2
    test[ty == 1, 8:24, 8:24] += 150
    p = predict_proba(m, test)
    assert p.shape == (20, 2) and np.allclose(p.sum(1), 1)
    assert auc(p[:, 1], ty.astype(bool)) > 0.95


def test_classifier_rejects_bad_input() -> None:
    x = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="labels: every class"):
        train_classifier(x, np.zeros(4, np.int64), 2)
    with pytest.raises(ValueError, match="images"):
        train_classifier(x[0], np.zeros(1, np.int64), 2)
    with pytest.raises(ValueError, match="reader: 'huge' is not one of"):
        train_classifier(x, np.arange(4) % 2, 2, TrainOptions(reader="huge"))


def test_wide_reader_sees_a_whole_128_plane() -> None:
    assert Reader(2, "small").receptive_field() == 46
    assert Reader(2, "wide").receptive_field() >= 128
    assert Reader(7, "wide").features(torch.zeros(3, 1, 128, 128)).shape == (3, 256)
    assert Reader(7, "wide").features(torch.zeros(3, 1, 32, 32)).shape == (3, 256)


def test_recipe_defaults_follow_the_reader() -> None:
    small, wide = TrainOptions(reader="small").recipe(), TrainOptions(reader="wide").recipe()
    assert (small.lr, small.balanced, small.max_shift, small.flip) == (2e-3, False, 3, False)
    assert (wide.lr, wide.balanced, wide.max_shift, wide.flip) == (1e-3, True, 6, True)
    assert TrainOptions(reader="wide", lr=0.01, balanced=False, max_shift=0, flip=False,
                        bf16=False).recipe() == Recipe(0.01, False, 0, False, False)


@pytest.mark.parametrize("n_classes", [2, 7])
def test_balanced_batches_hold_every_class_equally_however_rare(n_classes: int) -> None:
    labels = np.zeros(500, np.int64)
    labels[:2 * (n_classes - 1)] = np.repeat(np.arange(1, n_classes), 2)  # 2 of each rare class
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        idx = BatchSampler(labels, n_classes, True)(28, gen)
        per_class = np.bincount(labels[idx.numpy()], minlength=n_classes)
        assert per_class.max() - per_class.min() <= 1, per_class
    # uniform batches are what the small reader keeps: the rare classes mostly absent
    drawn = np.concatenate([labels[BatchSampler(labels, n_classes, False)(28, gen).numpy()]
                            for _ in range(20)])
    assert (drawn == 0).mean() > 0.9


def test_seed_ensemble_keeps_the_seed_that_found_the_sign() -> None:
    from fetalflex.evaluation.downstream import seed_ensemble

    rng = np.random.default_rng(3)
    pos = np.arange(100) >= 50
    found = pos + 0.01 * rng.normal(size=100)              # one seed separates the classes
    lost = [rng.normal(size=100) for _ in range(2)]        # two ranked at random
    ens = seed_ensemble([found, *lost])
    assert auc(ens, pos) > np.mean([auc(s, pos) for s in (found, *lost)])
    assert auc(seed_ensemble([found, found]), pos) == auc(found, pos) == 1.0


def test_mixed_batches_hold_the_share_of_the_first_group() -> None:
    # 8 "real" examples scattered among 200 "generated" ones, two classes
    labels = np.arange(208) % 2
    first = np.isin(np.arange(208), [3, 30, 57, 84, 110, 141, 170, 203])
    gen = torch.Generator().manual_seed(0)
    s = MixedSampler(labels, 2, first, share=0.5)
    idx = torch.cat([s(32, gen) for _ in range(50)]).numpy()
    assert first[idx].mean() == 0.5  # 16 of every 32, however few the real ones
    assert set(idx[first[idx]].tolist()) == set(np.nonzero(first)[0].tolist())
    assert labels[idx[first[idx]]].mean() == 0.5 and labels[idx[~first[idx]]].mean() == 0.5
    assert first[s(4, gen).numpy()].sum() == 2 and first[s(2, gen).numpy()].sum() == 1
    x = np.zeros((208, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="first: first_share needs a boolean mask"):
        train_classifier(x, labels, 2, TrainOptions(steps=1, first_share=0.5))
    with pytest.raises(ValueError, match="first: first_share needs a boolean mask"):
        train_classifier(x, labels, 2, TrainOptions(steps=1, first_share=0.5),
                         first=np.ones(208, bool))
    with pytest.raises(ValueError, match="first: first_share needs a boolean mask"):
        train_classifier(x, labels, 2, TrainOptions(steps=1, first_share=0.5),
                         first=first.astype(np.int64))
    with pytest.raises(ValueError, match="first_share: needs class-balanced batches"):
        train_classifier(x, labels, 2, TrainOptions(steps=1, first_share=0.5,
                                                    reader="small"), first=first)
    with pytest.raises(ValueError, match="first_share: must be within"):
        TrainOptions(first_share=1.0)
    with pytest.raises(ValueError, match=r"the marked examples lack classes \[0\]"):
        MixedSampler(labels, 2, labels == 1, 0.5)
    m = train_classifier(x, labels, 2, TrainOptions(steps=2, first_share=0.25), first=first)
    assert predict_proba(m, x[:3]).shape == (3, 2)
