"""Guidance interval: guided (two rows per sample) at high noise, conditional alone (one row)
below ``guidance_from_t``, with the conditional output exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fetalflex.model.denoiser import CONDITION_EXTRA, condition_vector
from fetalflex.sampling.denoisers import conditioned, guided

NUM_PLANES = 7


class RowCall:
    """A model call whose output depends on its conditioning, counting rows per call."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def __call__(self, x_t: Tensor, t: Tensor, layout: Tensor, cond: Tensor,
                 control_scale: Tensor) -> Tensor:
        self.rows.append(x_t.shape[0])
        s = layout.sum(dim=(1, 2, 3)).view(-1, 1, 1, 1) + control_scale.view(-1, 1, 1, 1)
        return 0.5 * x_t + 0.01 * s + 0.001 * t.view(-1, 1, 1, 1)


def _inputs(n: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    layout = torch.zeros(n, 4, 8, 8)
    layout[:, 1, 2:5, 2:5] = 1.0
    cond = condition_vector(torch.zeros(n, dtype=torch.long), torch.full((n,), 24.0),
                            NUM_PLANES)
    assert cond.shape[1] - CONDITION_EXTRA == NUM_PLANES
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)), layout, cond


def test_rows_and_outputs_either_side_of_the_boundary() -> None:
    x, layout, cond = _inputs()
    call = RowCall()
    den = guided(call, layout, cond, 2.0, 1.0, guidance_from_t=600)
    plain = conditioned(RowCall(), layout, cond, 1.0)
    full = guided(RowCall(), layout, cond, 2.0, 1.0)
    for t, rows in ((999, 6), (600, 6), (599, 3), (99, 3)):
        tt = torch.full((3,), t)
        out = den(x, tt)
        assert call.rows[-1] == rows
        want = full(x, tt) if rows == 6 else plain(x, tt)
        assert torch.equal(out, want)
    # Guided and conditional-only really differ here, so the test can tell them apart.
    assert not torch.equal(full(x, torch.full((3,), 99)), plain(x, torch.full((3,), 99)))


def test_zero_means_guidance_at_every_step() -> None:
    x, layout, cond = _inputs()
    call = RowCall()
    den = guided(call, layout, cond, 2.0, 1.0, guidance_from_t=0)
    for t in (999, 1, 0):
        den(x, torch.full((3,), t))
    assert call.rows == [6, 6, 6]


def test_the_noisiest_steps_can_run_unguided() -> None:
    """``guidance_below_t``: the interval's upper end (the conditional row alone at and
    above it), combinable with the lower end."""
    x, layout, cond = _inputs()
    call = RowCall()
    den = guided(call, layout, cond, 2.0, 1.0, guidance_from_t=200, guidance_below_t=900)
    plain = conditioned(RowCall(), layout, cond, 1.0)
    full = guided(RowCall(), layout, cond, 2.0, 1.0)
    for t, rows in ((999, 3), (900, 3), (899, 6), (200, 6), (199, 3)):
        tt = torch.full((3,), t)
        out = den(x, tt)
        assert call.rows[-1] == rows
        assert torch.equal(out, full(x, tt) if rows == 6 else plain(x, tt))


def test_weights_recommend_the_upper_end_and_the_engine_uses_it(tmp_path: Path) -> None:
    import pytest

    from fetalflex.anatomy.layout import rasterize
    from fetalflex.anatomy.templates import sample_template
    from fetalflex.backends.backends import load_backend
    from fetalflex.generation import Engine
    from fetalflex.model.config import DenoiserConfig
    from fetalflex.model.denoiser import FetalFlexDenoiser
    from tests.conftest import TINY_MODEL

    with pytest.raises(ValueError, match="guidance_below_t"):
        DenoiserConfig(**{**TINY_MODEL, "sampling": {"guidance_below_t": 1001}})
    model = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL))
    model.save(tmp_path / "all")
    cut = FetalFlexDenoiser(DenoiserConfig(**{**TINY_MODEL,
                                             "sampling": {"guidance_below_t": 900}}))
    cut.load_state_dict(model.state_dict())
    cut.save(tmp_path / "cut")
    size = TINY_MODEL["image_size"]
    layouts = [rasterize(sample_template("TV", 1), size)]
    images, rows = {}, {}
    for name in ("all", "cut"):
        backend = load_backend("torch", tmp_path / name)
        seen: list[int] = []

        def counting(x_t: Tensor, *rest: Tensor, _call=backend.call, _seen=seen) -> Tensor:
            _seen.append(x_t.shape[0])
            return _call(x_t, *rest)

        eng = Engine(dataclasses.replace(backend, call=counting))
        images[name], _ = eng.sample_layouts(layouts, [3], steps=4, guidance=2.0,
                                             sampler="dpmsolver++")
        rows[name] = seen
    # trailing DPM-Solver steps 999, 749, 499, 249: the first runs one row, not two
    assert rows == {"all": [2, 2, 2, 2], "cut": [1, 2, 2, 2]}
    assert not np.array_equal(images["all"], images["cut"])
