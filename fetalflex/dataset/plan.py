"""Spec -> the ordered items of a data set, each with an identity and a seed from the spec.

An item's id names its plane, its group (``normal``, a preset, or ``edit-<name>``) and its
number in that group, e.g. ``tv-hydrocephalus-00003``. Its seed (and gestational age, when
the spec gives a range) is a hash of the spec's seed base, plane, group and number: raising
one count adds items and changes no other item. Sharding takes every N-th item.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

from fetalflex.dataset.spec import DatasetSpec, GaRange
from fetalflex.request import SEED_LIMIT, GenerationRequest

NORMAL: Final = "normal"
EDIT_PREFIX: Final = "edit:"  # the manifest's ``preset`` of an edit-list item: edit:<name>
# Gestational ages drawn from a range are multiples of 1/16 week: exact in binary floating
# point (the service's float32 field carries them unchanged).
GA_STEP: Final = 1 / 16


@dataclass(frozen=True)
class Item:
    id: str
    plane: str
    group: str  # NORMAL, a preset name, or EDIT_PREFIX + an edit list's name
    number: int  # within its plane and group
    request: GenerationRequest

    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def abnormal(self) -> bool:
        return self.group != NORMAL

    @property
    def pair(self) -> bool:
        return self.request.pair


def _slug(group: str) -> str:
    return "edit-" + group.removeprefix(EDIT_PREFIX) if group.startswith(EDIT_PREFIX) \
        else group


def _draw(spec_seed: int, plane: str, group: str, number: int) -> tuple[int, float]:
    """(seed, u in [0, 1)) for one item, from the spec's seed base and the item's identity."""
    h = hashlib.sha256(f"fetalflex-dataset/{spec_seed}/{plane}/{group}/{number}".encode())
    d = h.digest()
    return int.from_bytes(d[:8], "big") % SEED_LIMIT, int.from_bytes(d[8:16], "big") / 2**64


def _ga(rng: GaRange | None, u: float) -> float | None:
    if rng is None:
        return None
    lo, hi = rng
    v = round((lo + u * (hi - lo)) / GA_STEP) * GA_STEP
    return min(max(v, lo), hi)


def plan(spec: DatasetSpec) -> list[Item]:
    """Every item of the spec, in plane order, then normal / presets / edit lists (each
    sorted by name), then number."""
    items: list[Item] = []
    for code in spec.plane_order():
        p = spec.planes[code]
        rng = p.ga_weeks if p.ga_weeks is not None else spec.ga_weeks
        pairs = p.pairs if p.pairs is not None else spec.pairs
        groups: list[tuple[str, int, dict[str, object]]] = [(NORMAL, p.count, {})]
        groups += [(name, n, {"preset": name, "pair": pairs})
                   for name, n in sorted(p.presets.items())]
        groups += [(EDIT_PREFIX + name, el.count, {"edits": el.edits, "pair": pairs})
                   for name, el in sorted(p.edits.items())]
        for group, count, fields in groups:
            for k in range(count):
                seed, u = _draw(spec.seed, code, group, k)
                req = spec.request(code, seed=seed, ga_weeks=_ga(rng, u), **fields)
                items.append(Item(f"{code.lower()}-{_slug(group)}-{k:05d}", code, group, k,
                                  req))
    return items


def parse_shard(text: str) -> tuple[int, int]:
    """``i/N`` (0 <= i < N) -> (i, N)."""
    head, sep, tail = text.partition("/")
    try:
        i, n = int(head), int(tail)
    except ValueError:
        raise ValueError(f"--shard: {text!r} is not i/N (e.g. 0/4)") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard: {text!r}: need 0 <= i < N")
    return i, n


def shard(items: list[Item], index: int, count: int) -> list[Item]:
    """Shard ``index`` of ``count``: every ``count``-th item from ``index`` (disjoint; the
    shards together are the plan)."""
    return items[index::count]
