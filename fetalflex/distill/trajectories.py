"""Teacher trajectories: what the student learns to jump between.

The teacher (any FetalFlex weights) samples each training layout with its recommended
guidance, deterministic DDIM on ``student_steps x substeps`` trailing timesteps, from the
noise stream generation draws for that seed. The states at the student's own timesteps
(every ``substeps``-th teacher call) are kept: x_T, ..., and the final image. One student
step must then go where ``substeps`` guided teacher steps (two denoiser rows each) went:
guidance is folded into the student, and its steps are ``substeps`` times longer.

Why this and not progressive distillation: one pass over cached teacher states, then a
training loop as cheap as ordinary training (one student call per sample, no teacher in
the loop), which fits a 2-core CPU as well as a GPU; the cost of a finer teacher is paid
once, in the cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fetalflex.anatomy.layout import DEFAULT_FIELD_MM
from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.data.manifest import read_manifest, resolve
from fetalflex.generation import Engine
from fetalflex.io.png import read_label_map
from fetalflex.request import GenerationRequest
from fetalflex.sampling.ddim import ddim_scheduler

Log = Callable[[str], None]


def student_timesteps(engine: Engine, student_steps: int, substeps: int) -> list[int]:
    """The student's DDIM timesteps (trailing); refused unless the teacher's finer grid
    passes through each of them."""
    if student_steps < 1 or substeps < 1:
        raise ValueError(f"student_steps, substeps: must be >= 1, got {student_steps}, "
                         f"{substeps}")
    coarse, fine = ddim_scheduler(engine.cfg), ddim_scheduler(engine.cfg)
    coarse.set_timesteps(student_steps)
    fine.set_timesteps(student_steps * substeps)
    ts = [int(t) for t in coarse.timesteps]
    kept = [int(t) for t in fine.timesteps][substeps - 1::substeps]
    # the state after substeps teacher calls sits at the next student timestep
    if [int(t) for t in fine.timesteps][::substeps] != ts or len(kept) != student_steps:
        raise ValueError(f"substeps: {student_steps} x {substeps} DDIM steps do not pass "
                         f"through the {student_steps}-step grid {ts}; choose substeps so "
                         f"that {engine.cfg.num_train_timesteps} / (student_steps x substeps)"
                         f" is a whole number")
    return ts


@dataclass
class Trajectories:
    """(N, K + 1, H, W) float16 states at the student's K timesteps and the end, and what
    conditioned them: label maps, planes, GA (NaN: unknown), field of view, appearance."""

    states: NDArray[np.float16]
    timesteps: list[int]
    label_maps: NDArray[np.uint8]
    planes: list[str]
    ga: NDArray[np.float32]
    field_mm: NDArray[np.float32]
    appearances: list[str]
    guidance: dict[str, float]
    teacher: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, states=self.states, label_maps=self.label_maps, ga=self.ga,
                 field_mm=self.field_mm, meta=np.array(json.dumps({
                     "timesteps": self.timesteps, "planes": self.planes,
                     "appearances": self.appearances, "guidance": self.guidance,
                     "teacher": self.teacher})))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Trajectories:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            return cls(np.asarray(z["states"]), meta["timesteps"], np.asarray(z["label_maps"]),
                       meta["planes"], np.asarray(z["ga"]), np.asarray(z["field_mm"]),
                       meta["appearances"], meta["guidance"], meta["teacher"])


SHARD = 640
"""Trajectories are made and cached in shards of this many: asking for more trajectories
later reuses every whole shard made before (the picks and noise of a shard do not depend
on how many shards follow)."""


def shard_spans(n: int) -> list[tuple[int, int]]:
    """The [start, stop) trajectory indices of each shard of ``n`` trajectories."""
    return [(s, min(n, s + SHARD)) for s in range(0, n, SHARD)]


class NoRecordsError(ValueError):
    """The manifest has no record of the asked split in an appearance the weights serve."""


def make_shard(engine: Engine, manifest: Path, start: int, stop: int, student_steps: int,
               substeps: int, seed: int = 0, batch: int = 16, log: Log = print,
               holdout: bool = False) -> Trajectories:
    """Teacher trajectories ``start`` .. ``stop`` - 1 (one shard) from the manifest's
    training records (validation records never): shard k = start / SHARD draws its records
    with ``default_rng(seed)`` (k = 0) or ``default_rng([seed, k])``, with replacement when
    the shard is larger than the records; trajectory i's noise seed is seed * 10^6 + i.
    ``holdout``: from the validation records only (``default_rng([seed, 0, 1])``), to
    measure the student on layouts it never trains on."""
    recs = [r for r in read_manifest(manifest, check_files=False)
            if (r.split == "val") == holdout and not r.abnormal and r.plane in PLANE_CODES]
    served = set(engine.cfg.appearances) or {"phantom"}
    recs = [r for r in recs if r.appearance in served]
    which = "validation" if holdout else "training"
    if not recs:
        raise NoRecordsError(f"data: {manifest} has no {which} record in an appearance these "
                         f"weights serve ({', '.join(sorted(served))})")
    ts = student_timesteps(engine, student_steps, substeps)
    k, n = start // SHARD, stop - start
    rng = np.random.default_rng([seed, 0, 1] if holdout else seed if k == 0 else [seed, k])
    pick = rng.choice(len(recs), n, replace=n > len(recs))
    chosen = [recs[int(i)] for i in pick]
    maps = np.stack([read_label_map(resolve(manifest.parent, r.label_map)) for r in chosen])
    size = engine.cfg.image_size
    if maps.shape[-1] != size:
        raise ValueError(f"data: label maps are {maps.shape[-1]} px, the teacher makes {size}")
    states = np.zeros((n, student_steps + 1, size, size), dtype=np.float16)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(chosen):
        groups.setdefault((r.plane, r.appearance), []).append(i)
    guidance: dict[str, float] = {}
    t0 = time.perf_counter()
    done = 0
    for (plane, look), idx in sorted(groups.items()):
        for s in range(0, len(idx), batch):
            chunk = idx[s:s + batch]
            layouts = [chosen[i].layout(maps[i]) for i in chunk]
            app = look if engine.cfg.appearances else None
            st = engine.sample_states(layouts, [seed * 10**6 + start + i for i in chunk],
                                      steps=student_steps * substeps, every=substeps,
                                      appearance=app)
            states[chunk] = st.astype(np.float16)
            done += len(chunk)
        guidance[look] = engine.resolve(GenerationRequest.model_validate(
            {"plane": plane, "appearance": app})).guidance
        log(f"teacher trajectories{' (held out)' if holdout else ''} {start}-{stop - 1}: "
            f"{done}/{n} ({plane} {look}; "
            f"{time.perf_counter() - t0:.0f} s)")
    return Trajectories(states, ts, maps, [r.plane for r in chosen],
                        np.array([np.nan if r.ga_weeks is None else r.ga_weeks
                                  for r in chosen], dtype=np.float32),
                        np.array([r.field_mm or DEFAULT_FIELD_MM for r in chosen],
                                 dtype=np.float32),
                        [r.appearance for r in chosen], guidance, engine.backend.model_hash)


def concat(parts: list[Trajectories]) -> Trajectories:
    """Shards of one teacher on one grid, in order, as one training set."""
    first = parts[0]
    for p in parts[1:]:
        if p.timesteps != first.timesteps or p.teacher != first.teacher:
            raise ValueError("trajectories: shards of different teachers or grids "
                             f"({first.teacher[:12]} {first.timesteps} vs {p.teacher[:12]} "
                             f"{p.timesteps})")
    guidance: dict[str, float] = {}
    for p in parts:
        guidance.update(p.guidance)
    return Trajectories(np.concatenate([p.states for p in parts]), first.timesteps,
                        np.concatenate([p.label_maps for p in parts]),
                        [x for p in parts for x in p.planes],
                        np.concatenate([p.ga for p in parts]),
                        np.concatenate([p.field_mm for p in parts]),
                        [x for p in parts for x in p.appearances], guidance, first.teacher)


def _cached(path: Path | None, make: Callable[[], Trajectories]) -> tuple[Trajectories, bool]:
    """The trajectories kept at ``path`` (and True), else ``make()``, kept there when a path
    is given (and False)."""
    if path is not None and path.is_file():
        return Trajectories.load(path), True
    traj = make()
    if path is not None:
        traj.save(path)
    return traj, False


def holdout_trajectories(engine: Engine, manifest: Path, n: int, student_steps: int,
                         substeps: int, seed: int = 0, log: Log = print,
                         cache: Path | None = None) -> Trajectories | None:
    """``n`` teacher trajectories on the manifest's validation layouts (``make_shard``
    with ``holdout``; cached like the training shards), or None when it has none."""
    if n <= 0:
        return None
    path = None
    if cache is not None:
        key = trajectories_key(engine.backend.model_hash, manifest, n, student_steps,
                               substeps, seed, holdout=True)
        path = cache / f"holdout-{key}.npz"
    try:
        return _cached(path, lambda: make_shard(engine, manifest, 0, n, student_steps,
                                                substeps, seed, log=log, holdout=True))[0]
    except NoRecordsError as e:
        log(f"held-out trajectories: none ({e})")
        return None


def make_trajectories(engine: Engine, manifest: Path, n: int, student_steps: int,
                      substeps: int, seed: int = 0, batch: int = 16, log: Log = print,
                      cache: Path | None = None) -> Trajectories:
    """``n`` teacher trajectories, shard by shard (``make_shard``); with ``cache`` (a
    folder) each shard is kept there as ``trajectories-KEY.npz`` and reused."""
    parts = []
    for start, stop in shard_spans(n):
        path = None
        if cache is not None:
            key = trajectories_key(engine.backend.model_hash, manifest, stop - start,
                                   student_steps, substeps, seed, start // SHARD)
            path = cache / f"trajectories-{key}.npz"
        part, was_cached = _cached(path, partial(make_shard, engine, manifest, start, stop,
                                                 student_steps, substeps, seed, batch, log))
        if was_cached and path is not None:
            log(f"teacher trajectories {start}-{stop - 1}: cached ({path.name})")
        parts.append(part)
    return concat(parts)


def trajectories_key(teacher_hash: str, manifest: Path, n: int, student_steps: int,
                     substeps: int, seed: int, shard: int = 0, holdout: bool = False) -> str:
    """The cache key of one shard of ``n`` trajectories (shard 0: the key of caches made
    before shards existed, which it reuses)."""
    h = hashlib.sha256(manifest.read_bytes()).hexdigest()
    ident: list[object] = [teacher_hash, h, n, student_steps, substeps, seed]
    if shard:
        ident.append(shard)
    if holdout:
        ident.append("holdout")
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
