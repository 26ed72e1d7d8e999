"""Plane-contrast guidance: a plane of a contrast group is also run under "the group's other
planes" (same layout, same look) and moved away from it, one more row per step, only for
the planes and appearances the weights name."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from fetalflex.anatomy.planes import plane_index
from fetalflex.model.config import DenoiserConfig, SamplingDefaults
from fetalflex.model.denoiser import condition_vector, with_planes_mixed
from fetalflex.request import denoiser_rows
from fetalflex.sampling.denoisers import contrast_conditions, guided
from tests.conftest import TINY_MODEL

NUM_PLANES = 7


class CondCall:
    """A model call whose output depends on the plane part of its condition and on the
    layout, recording every call's conditions."""

    def __init__(self) -> None:
        self.conds: list[Tensor] = []

    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor:
        self.conds.append(cond.clone())
        code = (cond[:, :NUM_PLANES + 1] * torch.arange(1.0, NUM_PLANES + 2)).sum(1)
        s = layout.sum(dim=(1, 2, 3)) * control_scale + code
        return 0.5 * x_t + 0.01 * s.view(-1, 1, 1, 1)


def _inputs(plane: str, n: int = 2) -> tuple[Tensor, Tensor, Tensor]:
    layout = torch.zeros(n, 4, 8, 8)
    layout[:, 1, 2:5, 2:5] = 1.0
    cond = condition_vector(torch.full((n,), plane_index(plane)), torch.full((n,), 24.0),
                            NUM_PLANES)
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)), layout, cond


def test_the_other_planes_condition_is_their_mean_one_hot() -> None:
    _, _, cond = _inputs("TV")
    tt, tc = plane_index("TT"), plane_index("TC")
    mixed = with_planes_mixed(cond, [(tt, tc), ()], NUM_PLANES)
    assert mixed[0, plane_index("TV")] == 0.0
    assert mixed[0, tt] == mixed[0, tc] == 0.5
    assert mixed[0, :NUM_PLANES + 1].sum() == 1.0
    assert torch.equal(mixed[0, NUM_PLANES + 1:], cond[0, NUM_PLANES + 1:])  # GA kept
    assert torch.equal(mixed[1], cond[1])  # no planes: unchanged


def test_output_rows_and_formula_either_side_of_the_guidance_cut() -> None:
    x, layout, cond = _inputs("TC")
    other = with_planes_mixed(cond, [(plane_index("TV"), plane_index("TT"))] * 2, NUM_PLANES)
    weight = torch.tensor([2.0, 0.5])
    ones = torch.ones(2)
    c, o = CondCall()(x, x, layout, cond, ones), CondCall()(x, x, layout, other, ones)
    w4 = weight.view(-1, 1, 1, 1)
    for g in (3.0, 1.0):
        call = CondCall()
        den = guided(call, layout, cond, g, 1.0, guidance_below_t=900,
                     contrast=(other, weight))
        plain = guided(CondCall(), layout, cond, g, 1.0, guidance_below_t=900)
        for t in (999, 500):
            tt = torch.full((2,), t)
            out = den(x, tt)
            if t >= 900:  # outside the guidance interval: the conditional row alone
                assert call.conds[-1].shape[0] == 2
                assert torch.equal(out, c)
                continue
            # conditional, other planes (and unconditional unless guidance is 1)
            assert call.conds[-1].shape[0] == (6 if g != 1.0 else 4)
            assert torch.allclose(out, plain(x, tt) + w4 * (c - o))
            assert not torch.allclose(out, plain(x, tt))  # the term really moves it


def test_zero_weight_everywhere_is_plain_guidance() -> None:
    x, layout, cond = _inputs("TV")
    call = CondCall()
    den = guided(call, layout, cond, 2.0, 1.0, contrast=(cond, torch.zeros(2)))
    out = den(x, torch.full((2,), 500))
    assert call.conds[-1].shape[0] == 4
    assert torch.equal(out, guided(CondCall(), layout, cond, 2.0, 1.0)(x, torch.full((2,), 500)))


def test_weights_name_the_looks_planes_and_groups() -> None:
    s = SamplingDefaults(plane_contrast={"real": {"TV": 2.0, "TC": 3.0, "TT": 0.0}})
    assert s.contrast_planes("real", "TV") == ("TT", "TC")
    assert s.contrast_planes("real", "TC") == ("TV", "TT")
    assert s.contrast_planes("real", "TT") == ()  # weight 0: not contrasted
    assert s.contrast_planes("real", "AC") == ()
    assert s.contrast_planes("phantom", "TV") == ()
    assert s.contrast_weight("real", "TC") == 3.0
    assert s.contrast_record("phantom") == {}
    assert s.contrast_record("real")["plane_contrast"] == {"TV": 2.0, "TC": 3.0}
    with pytest.raises(ValueError, match="plane_contrast.real.TV: must be within"):
        SamplingDefaults(plane_contrast={"real": {"TV": -1.0}})
    with pytest.raises(ValueError, match="plane_contrast.real.AC: the plane is in no"):
        SamplingDefaults(plane_contrast={"real": {"AC": 1.0}})
    with pytest.raises(ValueError, match="two or more distinct planes"):
        SamplingDefaults(plane_contrast_groups=(("TV", "XX"),))
    with pytest.raises(ValueError, match="two or more distinct planes"):
        SamplingDefaults(plane_contrast_groups=(("TV",),))
    with pytest.raises(ValueError, match="in two groups"):
        SamplingDefaults(plane_contrast_groups=(("TV", "TT"), ("TT", "TC")))


def test_contrast_conditions_per_row() -> None:
    cfg = DenoiserConfig(**{**TINY_MODEL, "appearances": ["phantom", "real"],
                            "sampling": {"plane_contrast": {"real": {"TV": 1.5, "TC": 1.5}}}})
    cond = torch.cat([condition_vector(torch.tensor([plane_index(p)]), torch.tensor([24.0]),
                                       cfg.num_planes, torch.tensor([k]), 2)
                      for p, k in (("TV", 1), ("AC", 1), ("TC", 0))])
    got = contrast_conditions(cfg, cond, ["TV", "AC", "TC"], ["real", "real", "phantom"])
    assert got is not None
    other, weight = got
    assert weight.tolist() == [1.5, 0.0, 0.0]
    assert other[0, plane_index("TT")] == other[0, plane_index("TC")] == 0.5
    assert torch.equal(other[1:], cond[1:])
    assert contrast_conditions(cfg, cond[1:], ["AC", "TC"], ["real", "phantom"]) is None


def test_rows_per_image_count_the_contrast_row() -> None:
    assert denoiser_rows(12, 2.0, 900) == 22  # t = 999 and 916 run unguided
    assert denoiser_rows(12, 2.0, 900, contrast=True) == 32  # 10 steps in the interval
    assert denoiser_rows(12, 1.0, 900, contrast=True) == 22
    assert denoiser_rows(6, 1.0, contrast=True) == 12
    assert denoiser_rows(6, 2.0) == 12


def test_the_engine_applies_it_to_the_named_planes_only(tmp_path: Path) -> None:
    from fetalflex.anatomy.layout import rasterize
    from fetalflex.anatomy.templates import sample_template
    from fetalflex.backends.backends import load_backend
    from fetalflex.generation import Engine
    from fetalflex.model.denoiser import FetalFlexDenoiser

    base = {**TINY_MODEL, "appearances": ["phantom", "real"]}
    model = FetalFlexDenoiser(DenoiserConfig(**{**base, "sampling": {"guidance_below_t": 900}}))
    model.save(tmp_path / "plain")
    con = FetalFlexDenoiser(DenoiserConfig(**{**base, "sampling": {
        "guidance_below_t": 900, "plane_contrast": {"real": {"TV": 2.0}}}}))
    con.load_state_dict(model.state_dict())
    con.save(tmp_path / "contrast")
    size = TINY_MODEL["image_size"]
    seen: dict[tuple[str, str, str], list[int]] = {}
    images: dict[tuple[str, str, str], np.ndarray] = {}
    for name in ("plain", "contrast"):
        backend = load_backend("torch", tmp_path / name)
        for plane in ("TV", "AC"):
            for look in ("real", "phantom"):
                rows: list[int] = []

                def counting(x_t: Tensor, *rest: Tensor, _call=backend.call,
                             _rows=rows) -> Tensor:
                    _rows.append(x_t.shape[0])
                    return _call(x_t, *rest)

                eng = Engine(dataclasses.replace(backend, call=counting))
                layouts = [rasterize(sample_template(plane, 1), size)]
                images[name, plane, look], _ = eng.sample_layouts(
                    layouts, [3], steps=4, guidance=2.0, sampler="dpmsolver++",
                    appearance=look)
                seen[name, plane, look] = rows
    # trailing steps 999, 749, 499, 249; the cut leaves t = 999 without the null row
    assert seen["contrast", "TV", "real"] == [1, 3, 3, 3]
    assert seen["contrast", "AC", "real"] == [1, 2, 2, 2]
    assert seen["contrast", "TV", "phantom"] == [1, 2, 2, 2]
    assert sum(seen["contrast", "TV", "real"]) == denoiser_rows(4, 2.0, 900, contrast=True)
    # A random tiny model's plane embedding moves its output: the term changes the image
    # of the named plane and look, and nothing else.
    assert not np.array_equal(images["contrast", "TV", "real"],
                              images["plain", "TV", "real"])
    for key in (("AC", "real"), ("TV", "phantom"), ("AC", "phantom")):
        assert np.array_equal(images[("contrast", *key)], images[("plain", *key)])
