"""Guidance interval: guided (two rows per sample) at high noise, conditional alone (one row)
below ``guidance_from_t``, with the conditional output exactly."""

from __future__ import annotations

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
