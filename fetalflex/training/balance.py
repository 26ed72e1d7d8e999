"""How often each training record is drawn: balance the (appearance, plane) cells.

A real collection is lopsided (in our FETAL_PLANES_DB part: 806 TT training scans, 74 TV,
83 TC) and a mixed real + phantom manifest adds 300 phantoms per plane. Drawn uniformly,
real TV is 2 % of the batches and the model learns the rare planes' look last. With
``plane_balance`` = b, a record of a cell with ``c`` records is drawn with weight
``c ** -b``: 0 keeps the data's own shares, 1 gives every cell the same share (each real TV
scan then drawn 11x as often as a TT one: more risk of memorising it), 0.5 is between.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from fetalflex.data.manifest import Record


def cell(record: Record) -> tuple[str, str]:
    return record.appearance, record.plane


def record_weights(records: Sequence[Record], balance: float) -> torch.Tensor | None:
    """(N,) draw weights summing to 1, or None when ``balance`` is 0 (uniform epochs)."""
    if balance <= 0:
        return None
    counts = Counter(cell(r) for r in records)
    w = torch.tensor([counts[cell(r)] ** -balance for r in records], dtype=torch.float64)
    return w / w.sum()


def cell_shares(records: Sequence[Record], weights: torch.Tensor | None) -> dict[str, float]:
    """The expected share of each cell in the batches ("real TV": 0.031, ...)."""
    shares: dict[str, float] = {}
    for i, r in enumerate(records):
        k = " ".join(cell(r))
        shares[k] = shares.get(k, 0.0) + (1.0 / len(records) if weights is None
                                          else float(weights[i]))
    return {k: round(v, 4) for k, v in sorted(shares.items())}
