"""Joint geometric augmentation: image and layout move together, the layout stays one-hot."""

from __future__ import annotations

import torch

from fetalflex.anatomy.structures import BACKGROUND, NUM_LABELS
from fetalflex.training.augment import AugmentConfig, joint_augment


def _pair(n: int = 4, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    lab = torch.zeros(n, size, size, dtype=torch.long)
    lab[:, 10:38, 12:36] = 3
    lab[:, 18:30, 20:28] = 7
    layout = torch.nn.functional.one_hot(lab, NUM_LABELS).permute(0, 3, 1, 2).float()
    image = torch.full((n, 1, size, size), -1.0)  # brightness = f(label)
    image[:, 0][lab == 3] = 0.2
    image[:, 0][lab == 7] = 0.9
    return image, layout


def test_warp_keeps_image_and_layout_together() -> None:
    image, layout = _pair()
    img, lay = joint_augment(image, layout, AugmentConfig(prob=1.0),
                             torch.Generator().manual_seed(0))
    assert torch.equal(lay.sum(1), torch.ones_like(lay.sum(1)))  # one-hot everywhere
    assert not torch.equal(lay, layout)  # it did move
    lab = lay.argmax(1)
    inner = img[:, 0][lab == 7]
    outer = img[:, 0][lab == BACKGROUND]
    # Pixels labelled 7 after the warp are (nearly all) the bright pixels of structure 7.
    assert float((inner > 0.5).float().mean()) > 0.9
    assert float((outer < -0.5).float().mean()) > 0.9


def test_no_augmentation_is_identity_and_draws_are_seeded() -> None:
    image, layout = _pair()
    img, lay = joint_augment(image, layout, AugmentConfig(prob=0.0),
                             torch.Generator().manual_seed(0))
    assert img is image and lay is layout
    a = joint_augment(image, layout, AugmentConfig(prob=0.5), torch.Generator().manual_seed(1))
    b = joint_augment(image, layout, AugmentConfig(prob=0.5), torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
