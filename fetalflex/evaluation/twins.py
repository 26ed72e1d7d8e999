"""FetalFlex twins of real images, for the downstream experiment (phantom world).

A twin is a real normal image whose anatomy an anomaly preset edited, repainted in the edit
region with the edited layout; its control is the same image repainted in the same region
with its own, unedited layout (so the repaint itself carries no label). Outside the region
both are the real image, byte for byte.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fetalflex.anatomy.layout import Layout
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.anatomy.presets import PRESETS, apply_preset
from fetalflex.anatomy.presets import preset as get_preset
from fetalflex.generation import Engine
from fetalflex.request import DEFAULT_CONTROL_SCALE, DEFAULT_GUIDANCE, RepaintSettings
from fetalflex.sampling.repaint import edit_region

# (plane, index) -> the repaint noise seed of that twin.
NoiseSeed = Callable[[str, int], int]
_PARTS = ("twins", "controls", "references", "regions")


@dataclass
class PhantomPool:
    """Real (phantom) images of one plane with their layouts."""

    images: list[NDArray[np.uint8]] = field(default_factory=list)
    layouts: list[Layout] = field(default_factory=list)

    def add(self, image: NDArray[np.uint8], layout: Layout) -> None:
        self.images.append(image)
        self.layouts.append(layout)

    def stack(self) -> NDArray[np.uint8]:
        return np.stack(self.images)


@dataclass
class SyntheticSet:
    """Per preset: twins (abnormal), controls (normal, repainted) and their planes."""

    twins: dict[str, NDArray[np.uint8]]
    controls: dict[str, NDArray[np.uint8]]
    references: dict[str, NDArray[np.uint8]]
    regions: dict[str, NDArray[np.bool_]]
    planes: dict[str, list[str]]
    skipped: dict[str, int]
    calls: int
    seconds: float
    # per preset: [denoiser calls, seconds] of its synthesis
    cost: dict[str, list[float]] = field(default_factory=dict)


def planes_of(preset_name: str) -> list[str]:
    """The planes a preset applies to, in the planes' order."""
    return [c for c in PLANE_CODES if c in get_preset(preset_name).planes]


def _round_robin(planes: list[str], n: int) -> list[tuple[str, int]]:
    """(plane, index within that plane) for n items spread over planes."""
    return [(planes[k % len(planes)], k // len(planes)) for k in range(n)]


def synthesize_twins(engine: Engine, normals: dict[str, PhantomPool],
                     presets: tuple[str, ...], per_preset: int, batch: int,
                     noise_seed: NoiseSeed, progress: Callable[[str], None] = print,
                     guidance: float = DEFAULT_GUIDANCE,
                     control_scale: float = DEFAULT_CONTROL_SCALE) -> SyntheticSet:
    """``per_preset`` twins + controls of each preset, spread over its planes, repainted
    ``batch`` at a time; twin ``i`` of the preset numbered ``pi`` in ``PRESETS`` on ``plane``
    takes its noise from ``noise_seed(plane, pi * 1000 + i)`` (so a preset's twins do not
    depend on which other presets are asked for). ``guidance`` and ``control_scale``: the
    repaint's (the request schema's defaults unless given)."""
    twins, controls, refs, regs, planes, skipped = {}, {}, {}, {}, {}, {}
    calls, t0 = 0, time.perf_counter()
    cost: dict[str, list[float]] = {}
    settings = RepaintSettings()
    numbers = {p.name: i for i, p in enumerate(PRESETS)}
    for name in presets:
        pi = numbers[get_preset(name).name]
        calls_before, t_preset = calls, time.perf_counter()
        items: list[tuple[str, NDArray[np.uint8], Layout, Layout, NDArray[np.bool_]]] = []
        n_skip = 0
        for plane, k in _round_robin(planes_of(name), per_preset):
            pool = normals[plane]
            j = (k + 7 * pi) % len(pool.images)  # presets start at different references
            ref_layout = pool.layouts[j]
            abn = apply_preset(ref_layout, name)
            region = edit_region(ref_layout.label_map, abn.label_map, settings.dilate_px)
            if not region.any():
                n_skip += 1
                continue
            items.append((plane, pool.images[j], ref_layout, abn, region))
        tw: list[NDArray[np.uint8]] = []
        ct: list[NDArray[np.uint8]] = []
        order: list[tuple[str, NDArray[np.uint8], Layout, Layout, NDArray[np.bool_]]] = []
        for plane in planes_of(name):
            sel = [it for it in items if it[0] == plane]
            for b in range(0, len(sel), batch):
                chunk = sel[b:b + batch]
                imgs = np.stack([c[1] for c in chunk])
                regions = [c[4] for c in chunk]
                seeds = [noise_seed(plane, pi * 1000 + b + i) for i in range(len(chunk))]
                out, n1 = engine.repaint(imgs, [c[3] for c in chunk], regions, seeds,
                                         guidance, control_scale, settings)
                ctl, n2 = engine.repaint(imgs, [c[2] for c in chunk], regions, seeds,
                                         guidance, control_scale, settings)
                tw += list(out)
                ct += list(ctl)
                order += chunk
                calls += n1 + n2
        twins[name], controls[name] = np.stack(tw), np.stack(ct)
        refs[name] = np.stack([it[1] for it in order])
        regs[name] = np.stack([it[4] for it in order])
        planes[name] = [it[0] for it in order]
        skipped[name] = n_skip
        cost[name] = [calls - calls_before, time.perf_counter() - t_preset]
        progress(f"synthesized {len(tw)} twins + controls for {name} "
                 f"({time.perf_counter() - t0:.0f} s)")
    return SyntheticSet(twins, controls, refs, regs, planes, skipped, calls,
                        time.perf_counter() - t0, cost)


def cached_twins(engine: Engine, normals: dict[str, PhantomPool], presets: tuple[str, ...],
                 per_preset: int, batch: int, noise_seed: NoiseSeed, path: Path,
                 identity: dict[str, Any], progress: Callable[[str], None] = print,
                 guidance: float = DEFAULT_GUIDANCE,
                 control_scale: float = DEFAULT_CONTROL_SCALE) -> SyntheticSet:
    """``synthesize_twins``, reused from ``path`` when it was made by the same model with
    the same options (``identity``: the caller's options that pick ``normals`` and the
    seeds); the expensive part, so the classifiers can be rerun alone. The file holds every
    preset synthesized so far with those options: a run asking for a subset reuses it, one
    asking for more synthesizes only the missing presets and adds them."""
    key = json.dumps({**identity, "model": engine.backend.model_hash,
                      "size": engine.cfg.image_size, "synth_per_preset": per_preset,
                      "batch": batch, "guidance": guidance, "control_scale": control_scale,
                      "repaint": RepaintSettings().model_dump()}, sort_keys=True)
    arrays: dict[str, Any] = {}  # Any: numpy's stub reads **kwds against allow_pickle
    meta: dict[str, Any] = {"planes": {}, "skipped": {}, "cost": {}}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key:
                meta = json.loads(str(z["meta"]))
                arrays = {k: z[k] for k in z.files if k not in ("key", "meta")}
    missing = tuple(n for n in presets if n not in meta["planes"])
    if len(missing) < len(presets):
        progress(f"reusing the synthetic set in {path} for "
                 f"{len(presets) - len(missing)} of {len(presets)} presets")
    if missing:
        syn = synthesize_twins(engine, normals, missing, per_preset, batch, noise_seed,
                               progress, guidance, control_scale)
        for n in missing:
            arrays.update({f"{part}/{n}": getattr(syn, part)[n] for part in _PARTS})
            meta["planes"][n], meta["skipped"][n] = syn.planes[n], syn.skipped[n]
            meta["cost"][n] = syn.cost[n]
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, key=np.array(key), meta=np.array(json.dumps(meta)),
                            **arrays)
        tmp.replace(path)
    parts = {part: {n: arrays[f"{part}/{n}"] for n in presets} for part in _PARTS}
    cost = {n: meta["cost"][n] for n in presets}
    return SyntheticSet(**parts, planes={n: meta["planes"][n] for n in presets},
                        skipped={n: meta["skipped"][n] for n in presets},
                        calls=round(sum(c[0] for c in cost.values())),
                        seconds=sum(c[1] for c in cost.values()), cost=cost)
