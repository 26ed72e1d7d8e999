"""The head segmenter's training batches: one pool, or a fixed share from marked scans."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fetalflex.evaluation import head
from fetalflex.evaluation.head import _batch_groups, train_mask_segmenter
from fetalflex.evaluation.options import RealDownstreamOptions


def _scans(n_marked: int, n_other: int) -> tuple[Any, Any, Any]:
    """Marked scans are white, the others black, so a batch shows where it came from."""
    images = np.concatenate([np.full((n_marked, 16, 16), 255, np.uint8),
                             np.zeros((n_other, 16, 16), np.uint8)])
    masks = np.zeros(images.shape, np.uint8)
    masks[:, 4:12, 4:12] = 1
    return images, masks, np.arange(len(images)) < n_marked


def _record_batches(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    real = head.joint_augment

    def spy(x: torch.Tensor, y: torch.Tensor, cfg: Any, gen: torch.Generator) -> Any:
        seen.append(x.clone())
        return real(x, y, cfg, gen)

    monkeypatch.setattr(head, "joint_augment", spy)
    return seen


def test_a_share_of_every_batch_comes_from_the_marked_scans(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 marked among 40: one pool would give about one white scan per batch of 8
    images, masks, first = _scans(3, 37)
    seen = _record_batches(monkeypatch)
    train_mask_segmenter(images, masks, steps=4, batch_size=8, first=first, first_share=0.5)
    assert len(seen) == 4
    for x in seen:
        white = (x.flatten(1).mean(1) > 0).sum().item()
        assert len(x) == 8 and white == 4
    seen.clear()
    train_mask_segmenter(images, masks, steps=20, batch_size=8)
    assert sum(int((x.flatten(1).mean(1) > 0).sum()) for x in seen) < 0.3 * 20 * 8


def test_batch_groups_round_and_refuse_bad_mixes() -> None:
    first = np.array([True] * 2 + [False] * 10)
    (a, na), (b, nb) = _batch_groups(12, 16, first, 0.01)
    assert (na, nb) == (1, 15) and a.tolist() == [0, 1] and len(b) == 10
    assert [n for _, n in _batch_groups(12, 16, first, 0.99)] == [15, 1]
    assert [n for _, n in _batch_groups(12, 16, None, None)] == [12]
    with pytest.raises(ValueError, match="first_share: must be within"):
        _batch_groups(12, 16, first, 1.0)
    with pytest.raises(ValueError, match="first: first_share needs a boolean mask"):
        _batch_groups(12, 16, first.astype(np.int64), 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="first: first_share needs a boolean mask"):
        _batch_groups(12, 16, None, 0.5)
    with pytest.raises(ValueError, match="first_share: give the share"):
        _batch_groups(12, 16, first, None)
    with pytest.raises(ValueError, match="marked and unmarked"):
        _batch_groups(12, 16, np.ones(12, bool), 0.5)
    with pytest.raises(ValueError, match="batch_size: mixed batches need at least 2"):
        _batch_groups(12, 1, first, 0.5)
    with pytest.raises(ValueError, match="segmenter_real_share"):
        RealDownstreamOptions(segmenter_real_share=1.5)
