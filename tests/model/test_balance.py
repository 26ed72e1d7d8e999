"""Draw weights per (appearance, plane) cell and the condition's learning-rate group."""

from __future__ import annotations

import pytest
import torch

from fetalflex.data.manifest import Record
from fetalflex.model.config import DenoiserConfig
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.training.balance import cell_shares, record_weights
from fetalflex.training.config import TrainConfig
from fetalflex.training.train import param_groups
from tests.conftest import TINY_MODEL


def _records(counts: dict[tuple[str, str], int]) -> list[Record]:
    out = []
    for (appearance, plane), n in counts.items():
        out += [Record.model_validate({"image": f"i{len(out) + k}.png",
                                       "label_map": f"l{len(out) + k}.png", "plane": plane,
                                       "seed": 0, "appearance": appearance})
                for k in range(n)]
    return out


def test_balance_moves_cell_shares_from_the_data_s_to_equal() -> None:
    recs = _records({("real", "TT"): 90, ("real", "TV"): 10})
    assert record_weights(recs, 0.0) is None
    assert cell_shares(recs, None) == {"real TT": 0.9, "real TV": 0.1}
    half = cell_shares(recs, record_weights(recs, 0.5))
    assert half["real TV"] == pytest.approx(10 ** 0.5 / (10 ** 0.5 + 90 ** 0.5), abs=1e-4)
    full = record_weights(recs, 1.0)
    assert full is not None and float(full.sum()) == pytest.approx(1.0)
    assert cell_shares(recs, full) == {"real TT": 0.5, "real TV": 0.5}
    with pytest.raises(ValueError, match="plane_balance"):
        TrainConfig.model_validate({"plane_balance": 2})


def test_condition_readers_get_their_own_learning_rate() -> None:
    model = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL, condition_channels=True))
    params = list(model.parameters())
    one = param_groups(model, params, 1e-4, TrainConfig())
    assert len(one) == 1 and len(one[0]["params"]) == len(params)
    two = param_groups(model, params, 1e-4, TrainConfig(condition_lr_scale=10))
    fast = {id(p) for p in two[1]["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in fast}
    assert two[1]["lr"] == pytest.approx(1e-3) and two[0]["lr"] == pytest.approx(1e-4)
    assert "control.controlnet_cond_embedding.conv_in.weight" in names
    assert "unet.class_embedding.linear_1.weight" in names
    assert all("class_embedding" in n or "cond_embedding.conv_in" in n for n in names)
    assert len(two[0]["params"]) + len(fast) == len(params)
    torch.optim.AdamW(two)  # a valid optimizer spec
