"""Write a phantom data set: B-mode images, label maps and ``manifest.jsonl``.

Item ``i`` is fully determined by ``(seed, i)``: its plane (round-robin over the
requested planes), gestational age, layout jitter, optional anomaly preset and speckle.
Abnormal items exist for evaluation only and are marked by their ``preset`` field.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fetalflex.anatomy.layout import Layout, extract, rasterize
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.presets import apply_preset, presets_for
from fetalflex.anatomy.templates import sample_template
from fetalflex.data.manifest import Record, write_manifest
from fetalflex.io.png import write_image, write_label_map
from fetalflex.phantom.simulator import simulate_bmode


@dataclass(frozen=True)
class PhantomItem:
    index: int
    plane: str
    seed: int
    abnormal: bool


def plan_items(n: int, planes: Sequence[str], seed: int,
               abnormal_fraction: float) -> list[PhantomItem]:
    if n < 1:
        raise ValueError(f"n: must be at least 1, got {n}")
    if not 0.0 <= abnormal_fraction <= 1.0:
        raise ValueError(f"abnormal_fraction: must be within [0, 1], got {abnormal_fraction}")
    for p in planes:
        get_plane(p)
    rng = np.random.default_rng([seed, 0xDA7A])
    seeds = rng.integers(0, 2**31 - 1, size=n)
    abn = rng.random(n) < abnormal_fraction
    return [PhantomItem(i, planes[i % len(planes)], int(seeds[i]), bool(abn[i]))
            for i in range(n)]


def render_phantom(plane: str, seed: int, size: int, preset: str | None = None,
                   ) -> tuple[np.ndarray, Layout, list[dict[str, object]]]:
    """One phantom: (B-mode image, layout, structure list) of ``plane`` from ``seed``,
    with the anomaly ``preset`` applied to the layout before simulation when given."""
    sl = sample_template(plane, seed)
    layout = rasterize(sl, size)
    structures = [s.model_dump() for s in sl.structures]
    if preset is not None:
        layout = apply_preset(layout, preset)
        structures = [s.model_dump() for s in extract(layout).structures]
    return simulate_bmode(layout.label_map, seed), layout, structures


def make_item(item: PhantomItem, size: int) -> tuple[np.ndarray, np.ndarray, Record]:
    """Render one item: (image, label map, manifest record with relative paths)."""
    preset_name: str | None = None
    if item.abnormal:
        choices = presets_for(item.plane)
        preset_name = choices[item.seed % len(choices)].name
    image, layout, structures = render_phantom(item.plane, item.seed, size, preset_name)
    rec = Record(
        image=f"images/{item.index:06d}.png", label_map=f"labels/{item.index:06d}.png",
        plane=item.plane, ga_weeks=round(float(layout.ga_weeks or 0.0), 3), seed=item.seed,
        field_mm=round(layout.field_mm, 4), preset=preset_name, structures=structures,
    )
    return image, layout.label_map, rec


def _write(args: tuple[PhantomItem, int, str]) -> Record:
    item, size, out = args
    image, label_map, rec = make_item(item, size)
    root = Path(out)
    write_image(root / rec.image, image, {"Plane": item.plane, "Seed": str(item.seed),
                                          "Preset": rec.preset or "none"})
    write_label_map(root / rec.label_map, label_map)
    return rec


def write_phantom_set(
    out: Path, n: int, planes: Sequence[str] = PLANE_CODES, size: int = 128, seed: int = 0,
    abnormal_fraction: float = 0.0, workers: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n`` items under ``out``; the manifest is written last, atomically."""
    items = plan_items(n, list(planes), seed, abnormal_fraction)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(it, size, str(out)) for it in items]
    workers = workers or min(mp.cpu_count(), 8)
    records: list[Record] = []
    if workers == 1:
        for j in jobs:
            records.append(_write(j))
            if progress:
                progress(1)
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for rec in pool.imap(_write, jobs, chunksize=16):
                records.append(rec)
                if progress:
                    progress(1)
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, records)
    return manifest
