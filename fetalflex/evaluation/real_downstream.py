"""``fetalflex evaluate-downstream-real``: do FetalFlex images make real fetal-ultrasound
models better? The paper's claim, tested on real scans (our imported HC18 and
FETAL_PLANES_DB parts; every figure on the validation split, split by subject / patient at
import, never trained on).

Each task trains a small model on N real training scans under three arms:

* ``real``: the N real scans alone;
* ``real+synthetic``: the same N real scans and every generated scan of the task;
* ``synthetic``: the generated scans alone (the same model for every N).

Tasks:

* ``heads`` (HC18): a head segmenter (``head.train_mask_segmenter``) + head circumference
  (moment ellipse, Ramanujan, mm from the pixel size). Generated scans are made from head
  outlines drawn over the real training range (an outline's size with its field of view and
  GA, another's position, a third's angle; rejected when it leaves the scan): the label is
  free, it is the requested outline. Dice and mean absolute HC difference (mm) against the
  sonographer's outline and the data set's HC.
* ``planes`` (FETAL_PLANES_DB): abdomen / brain / femur / thorax, N real scans per class;
  generated scans from "nothing labelled" layouts of each plane (brain split between TV, TT
  and TC). Accuracy and macro-F1.
* ``brain_planes`` (FETAL_PLANES_DB, where the brain plane is labelled): TV / TT / TC.
* ``microcephaly``: what an anomaly screen can be shown with these data (below).

Anomalies: our real data holds no labelled anomaly, and no gestational age that is not
itself computed from the head (HC18's GA is Hadlock's from the HC; FETAL_PLANES_DB gives
none). A microcephaly screen (HC below the growth curve for the GA) can therefore not be
tested on real scans here: neither its sensitivity (no microcephalic scan) nor its
specificity (no independent GA). What is measured: generated scans of small heads
(validation outlines shrunk by ``microcephaly_scale``) read by the segmenter trained on all
real scans: does a biometry screen read the small head FetalFlex was asked for (HC ratio
measured / requested, beside the same ratio on the unshrunk outlines)?

Every interval is a 95 % bootstrap over validation scans of the figure averaged over the
training seeds. Finished cells are kept (``parts.PartCheckpoint``): a run resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fetalflex.anatomy.layout import DEFAULT_FIELD_MM, Layout, Shape, StructureList, rasterize
from fetalflex.anatomy.structures import BACKGROUND, BY_NAME, UNLABELLED
from fetalflex.evaluation.classifier import TrainOptions, predict_proba, train_classifier
from fetalflex.evaluation.head import (
    circumference_mm,
    dice,
    segment_heads,
    train_mask_segmenter,
)
from fetalflex.evaluation.options import RealDownstreamOptions
from fetalflex.evaluation.parts import PartCheckpoint
from fetalflex.evaluation.real import bootstrap_interval, cache_key, effective_guidance
from fetalflex.evaluation.real_data import RealSet, head_mask, head_shape, load_real
from fetalflex.generation import Engine

ARMS: tuple[str, ...] = ("real", "real+synthetic", "synthetic")
# FETAL_PLANES_DB's four classes in our plane codes (its "Fetal brain" holds TV, TT and TC).
PLANE_CLASSES: dict[str, tuple[str, ...]] = {
    "abdomen": ("AC",), "brain": ("TV", "TT", "TC"), "femur": ("FL",), "thorax": ("4CH",)}
BRAIN_CLASSES: dict[str, tuple[str, ...]] = {"TV": ("TV",), "TT": ("TT",), "TC": ("TC",)}
FPDB_SOURCE = "FETAL_PLANES_DB"
HC18_SOURCE = "HC18"
SKULL = BY_NAME["skull"].id
Log = Callable[[str], None]


def macro_f1(pred: NDArray[np.int64], truth: NDArray[np.int64], n_classes: int) -> float:
    """Mean over classes of 2 TP / (2 TP + FP + FN) (a class never predicted nor present
    counts 1)."""
    scores = []
    for k in range(n_classes):
        tp = int(((pred == k) & (truth == k)).sum())
        fp = int(((pred == k) & (truth != k)).sum())
        fn = int(((pred != k) & (truth == k)).sum())
        scores.append(1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def _f1_interval(preds: list[NDArray[np.int64]], truth: NDArray[np.int64], n_classes: int,
                 n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(truth), len(truth))
        vals.append(np.mean([macro_f1(p[idx], truth[idx], n_classes) for p in preds]))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def nanmean(x: Any) -> float:
    """Mean of the finite values; NaN (no warning) when there is none."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def pick(n: int, total: int, seed: int) -> NDArray[np.int64]:
    """``n`` of ``total`` indices (all when n is 0 or >= total), drawn by ``seed``."""
    if n == 0 or n >= total:
        return np.arange(total, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False)).astype(np.int64)


# ------------------------------------------------------------------------- head outlines
def _inside(cx: float, cy: float, a: float, b: float, angle: float) -> bool:
    """The ellipse (fractions of the side) lies within the scan with a 2 % margin."""
    t = math.radians(angle)
    hx = math.hypot(a * math.cos(t), b * math.sin(t))
    hy = math.hypot(a * math.sin(t), b * math.cos(t))
    return cx - hx >= 0.02 and cx + hx <= 0.98 and cy - hy >= 0.02 and cy + hy <= 0.98


def ring_layout(heads: RealSet, donor: int, shape: Shape, *, clear: bool
                ) -> tuple[Layout, NDArray[np.bool_]] | None:
    """A TT layout: the donor scan's label map with its own head ring replaced by ``shape``.

    Everything else the donor's map says (e.g. the letterbox bands of HC18's 800 x 540
    scans) is kept, with the donor's field of view and GA. With ``clear`` a ring that would
    cross a labelled pixel (a band) gives None. Returns the layout and the filled head mask."""
    size = int(heads.images.shape[-1])
    rec = heads.records[donor]
    field = rec.field_mm or DEFAULT_FIELD_MM
    ring = rasterize(StructureList(plane="TT", field_mm=field, ga_weeks=rec.ga_weeks,
                                   fill="unlabelled", sector="none", structures=(shape,)),
                     size).label_map
    base = heads.label_maps[donor].copy()
    base[base == SKULL] = UNLABELLED
    on_ring = ring == SKULL
    if clear and (base[on_ring] != UNLABELLED).any():
        return None
    base[on_ring] = SKULL
    return Layout("TT", base, field, rec.ga_weeks), head_mask(shape, size)


def sample_outlines(heads: RealSet, n: int, seed: int) -> list[tuple[Layout, NDArray[np.bool_]]]:
    """``n`` head-outline layouts over the real range, each with its filled head mask.

    Size (both semi-axes, with that scan's field of view and GA), position and angle come
    from three training scans drawn independently; the rest of the label map (e.g. the
    letterbox bands of HC18's 800 x 540 scans, background) is the size donor's, its own ring
    taken out. A draw whose ellipse leaves the scan or crosses a band is drawn again."""
    rng = np.random.default_rng(seed)
    shapes = [head_shape(r) for r in heads.records]
    have = [i for i, s in enumerate(shapes) if s is not None]
    if not have:
        raise ValueError("data: no training scan has a head outline (import HC18)")
    out: list[tuple[Layout, NDArray[np.bool_]]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n:
            raise ValueError("head outlines: too few draws fit inside the scan")
        i, j, k = (int(have[x]) for x in rng.integers(0, len(have), 3))
        si, sj, sk = shapes[i], shapes[j], shapes[k]
        assert si is not None and sj is not None and sk is not None
        shape = si.model_copy(update={"center": sj.center, "angle": sk.angle})
        if not _inside(shape.center[0], shape.center[1], shape.axes[0], shape.axes[1],
                       shape.angle):
            continue
        made = ring_layout(heads, i, shape, clear=True)
        if made is not None:
            out.append(made)
    return out


def _generate(engine: Engine, layouts: list[Layout], seeds: list[int],
              opts: RealDownstreamOptions, cache: Path, name: str, log: Log
              ) -> NDArray[np.uint8]:
    """One generated scan per layout (batched per plane), kept in ``cache``."""
    key = cache_key(engine.backend.model_hash, opts.appearance,
               effective_guidance(engine, opts.appearance, opts.guidance), seeds,
               [hashlib.sha256(x.label_map.tobytes()).hexdigest() for x in layouts],
               [(x.plane, x.field_mm, x.ga_weeks) for x in layouts])
    path = cache / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return np.asarray(z["images"])
    size = layouts[0].label_map.shape[0]
    images = np.zeros((len(layouts), size, size), dtype=np.uint8)
    t0 = time.perf_counter()
    by_plane: dict[str, list[int]] = {}
    for i, x in enumerate(layouts):
        by_plane.setdefault(x.plane, []).append(i)
    for plane, idx in by_plane.items():
        for s in range(0, len(idx), opts.batch):
            chunk = idx[s:s + opts.batch]
            imgs, _ = engine.sample_layouts([layouts[i] for i in chunk],
                                            [seeds[i] for i in chunk],
                                            appearance=opts.appearance,
                                            guidance=opts.guidance)
            images[chunk] = imgs
        log(f"{name}: generated {len(idx)} {plane} scans ({time.perf_counter() - t0:.0f} s)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, images=images)
    tmp.replace(path)
    return images


# ------------------------------------------------------------------------------- heads
def _head_val(val: RealSet) -> tuple[RealSet, NDArray[np.bool_], NDArray[np.float64],
                                     NDArray[np.float64]]:
    heads = val.subset(val.with_head())
    size = int(val.images.shape[-1])
    masks = np.stack([head_mask(s, size) for s in (head_shape(r) for r in heads.records)
                      if s is not None])
    mm = np.array([(r.field_mm or float("nan")) / size for r in heads.records])
    hc = np.array([r.hc_mm or float("nan") for r in heads.records])
    return heads, masks, mm, hc


def _read_heads(seg: Any, images: NDArray[np.uint8], masks: NDArray[np.bool_],
                mm: NDArray[np.float64], hc: NDArray[np.float64]
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-scan Dice and absolute HC difference (mm; NaN where no head was read)."""
    read = segment_heads(seg, images)
    d = np.array([dice(read[i], masks[i]) for i in range(len(images))])
    got = np.array([circumference_mm(read[i], mm[i]) for i in range(len(images))])
    return d, np.abs(got - hc)


def run_heads(engine: Engine, train: RealSet, val: RealSet, opts: RealDownstreamOptions,
              out: Path, done: PartCheckpoint, log: Log) -> dict[str, Any]:
    heads = train.subset(train.with_head())
    if not len(heads.records):
        raise ValueError("data: no training scan has a head outline (import HC18)")
    vh, vmask, vmm, vhc = _head_val(val)
    size = int(train.images.shape[-1])
    drawn = sample_outlines(heads, opts.synth_heads, opts.seed + 7)
    syn = _generate(engine, [x for x, _ in drawn],
                    [opts.seed * 100_000 + 50_000 + i for i in range(len(drawn))], opts,
                    out / "cache", "heads", log)
    syn_mask = np.stack([m for _, m in drawn]).astype(np.uint8)
    real_mask = np.stack([head_mask(s, size) for s in (head_shape(r) for r in heads.records)
                          if s is not None]).astype(np.uint8)
    cells: dict[str, Any] = {}
    per_scan: dict[str, dict[str, NDArray[np.float64]]] = {}
    sizes = sorted(set(opts.head_sizes), key=lambda n: (n == 0, n))
    for n in sizes:
        for arm in ARMS:
            if arm == "synthetic" and n != sizes[0]:
                continue  # no real scan: one model whatever N
            name = "synthetic" if arm == "synthetic" else f"{arm} N={n or 'all'}"
            per_seed = []
            for seed in opts.seeds:
                part = f"heads/{name}/seed{seed}"
                got = done.get(part)
                if got is None:
                    t0 = time.perf_counter()
                    idx = pick(n, len(heads.records), 1000 + seed)
                    first, share = None, None
                    if arm == "real":
                        x, y = heads.images[idx], real_mask[idx]
                    elif arm == "real+synthetic":
                        x = np.concatenate([heads.images[idx], syn])
                        y = np.concatenate([real_mask[idx], syn_mask])
                        if opts.segmenter_real_share is not None:
                            first = np.arange(len(x)) < len(idx)
                            share = opts.segmenter_real_share
                    else:
                        x, y = syn, syn_mask
                    seg = train_mask_segmenter(x, y, opts.segmenter_steps, seed=seed,
                                               first=first, first_share=share)
                    d, err = _read_heads(seg, vh.images, vmask, vmm, vhc)
                    got = {"n_real": 0 if arm == "synthetic" else len(idx),
                           "n_synthetic": 0 if arm == "real" else len(syn),
                           "dice": d.tolist(), "hc_abs_mm": err.tolist(),
                           "seconds": round(time.perf_counter() - t0, 1)}
                    if arm == "real" and n == 0 and seed == opts.seeds[0]:
                        seg.save(out / "instruments" / "head_segmenter_all_real",
                                 {"steps": opts.segmenter_steps, "seed": seed})
                    done.put(part, got)
                    log(f"heads {name} seed {seed}: Dice {np.mean(d):.4f}, "
                        f"HC {nanmean(err):.2f} mm ({got['seconds']} s)")
                per_seed.append(got)
            d, e = _head_per_scan(per_seed)
            cells[name] = _head_cell(per_seed, d, e, opts)
            per_scan[name] = {"dice": d, "hc_abs_mm": e}
    return {"n_train_heads": len(heads.records), "n_val_heads": len(vh.records),
            "n_synthetic": len(syn), "cells": cells, "paired": _paired(per_scan, opts)}


def _head_per_scan(per_seed: list[dict[str, Any]]
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per validation scan, over the training seeds: mean Dice, mean abs. HC difference
    (NaN where no seed read a head)."""
    d = np.mean([np.array(s["dice"], dtype=np.float64) for s in per_seed], axis=0)
    hc = np.array([s["hc_abs_mm"] for s in per_seed], dtype=np.float64)
    e = np.array([nanmean(hc[:, i]) for i in range(hc.shape[1])])
    return d, e


def paired_difference(a: NDArray[np.float64], b: NDArray[np.float64], n: int, seed: int
                      ) -> dict[str, Any]:
    """``b - a`` on the same validation scans (NaN pairs dropped): mean and its 95 %
    bootstrap interval, scans resampled together, so what both arms share (hard scans)
    cancels out of the interval."""
    diff = b - a
    diff = diff[np.isfinite(diff)]
    return {"mean": float(diff.mean()) if len(diff) else float("nan"),
            "interval": bootstrap_interval(diff, n, seed), "n_scans": len(diff)}


def _paired(per_scan: dict[str, dict[str, NDArray[np.float64]]], opts: RealDownstreamOptions
            ) -> dict[str, Any]:
    """For every ``real N=...`` cell with a ``real+synthetic`` twin, keyed by ``N=...``: the
    paired difference (twin minus real only) of each per-scan figure."""
    out: dict[str, Any] = {}
    for name, real in per_scan.items():
        mixed = per_scan.get(name.replace("real ", "real+synthetic ", 1))
        if name.startswith("real N=") and mixed is not None:
            out[name.removeprefix("real ")] = {
                key: paired_difference(v, mixed[key], opts.bootstrap, opts.seed)
                for key, v in real.items()}
    return out


def _head_cell(per_seed: list[dict[str, Any]], d: NDArray[np.float64], e: NDArray[np.float64],
               opts: RealDownstreamOptions) -> dict[str, Any]:
    """``d`` / ``e``: the per-scan Dice and HC difference of ``_head_per_scan(per_seed)``."""
    return {"n_real": per_seed[0]["n_real"], "n_synthetic": per_seed[0]["n_synthetic"],
            "seeds": len(per_seed),
            "dice": float(np.mean(d)), "dice_interval": bootstrap_interval(d, opts.bootstrap,
                                                                       opts.seed),
            "dice_per_seed": [float(np.mean(s["dice"])) for s in per_seed],
            "hc_abs_mm": nanmean(e),
            "hc_interval": bootstrap_interval(e, opts.bootstrap, opts.seed),
            "hc_per_seed": [nanmean(s["hc_abs_mm"]) for s in per_seed],
            "no_head_read": int(np.sum(~np.isfinite(e)))}


# ------------------------------------------------------------------------------ planes
def _class_labels(data: RealSet, classes: dict[str, tuple[str, ...]]
                  ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Indices of FETAL_PLANES_DB records of the classes, and their class ids."""
    names = list(classes)
    idx, lab = [], []
    for i, r in enumerate(data.records):
        if r.source != FPDB_SOURCE:
            continue
        for k, name in enumerate(names):
            if r.plane in classes[name]:
                idx.append(i)
                lab.append(k)
    return np.array(idx, dtype=np.int64), np.array(lab, dtype=np.int64)


def _synthetic_layouts(train: RealSet, planes: tuple[str, ...], n: int, seed: int,
                       mode: str) -> list[Layout]:
    """``n`` layouts of a class of ``planes`` (split evenly, in turn), GA unknown.

    ``empty``: nothing labelled. ``sector``: the field of view of a FETAL_PLANES_DB training
    scan of that plane drawn at random (its ``background``, everything else not labelled),
    what the generator was trained on for such scans: most of them show the imaged sector
    (docs/EVALUATION.md, session 26: no better for the readers than ``empty``). The donors
    are any training scans of the plane, not only a cell's N real ones: in this mode the
    generated scans carry the fan shapes of the whole training split."""
    size = int(train.images.shape[-1])
    if mode == "empty":
        empty = np.full((size, size), UNLABELLED, dtype=np.uint8)
        return [Layout(planes[i % len(planes)], empty, 160.0) for i in range(n)]
    rng = np.random.default_rng([seed, 26])
    donors = {p: [i for i, r in enumerate(train.records)
                  if r.source == FPDB_SOURCE and r.plane == p] for p in planes}
    out: list[Layout] = []
    for i in range(n):
        plane = planes[i % len(planes)]
        if not donors[plane]:
            raise ValueError(f"data: no FETAL_PLANES_DB training scan of plane {plane} to "
                             f"take a field of view from (use --synth-layouts empty)")
        d = int(donors[plane][int(rng.integers(len(donors[plane])))])
        lm = np.where(train.label_maps[d] == BACKGROUND, BACKGROUND,
                      UNLABELLED).astype(np.uint8)
        out.append(Layout(plane, lm, train.records[d].field_mm or DEFAULT_FIELD_MM))
    return out


def _synthetic_planes(engine: Engine, classes: dict[str, tuple[str, ...]], train: RealSet,
                      opts: RealDownstreamOptions, out: Path, name: str, log: Log
                      ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """``synth_per_class`` scans per class (``_synthetic_layouts``): what a real
    FETAL_PLANES_DB record says, its plane."""
    layouts: list[Layout] = []
    labels: list[int] = []
    for k, planes in enumerate(classes.values()):
        layouts += _synthetic_layouts(train, planes, opts.synth_per_class,
                                      opts.seed * 1000 + k, opts.synth_layouts)
        labels += [k] * opts.synth_per_class
    seeds = [opts.seed * 100_000 + 60_000 + i for i in range(len(layouts))]
    images = _generate(engine, layouts, seeds, opts, out / "cache", name, log)
    return images, np.array(labels, dtype=np.int64)


def run_planes(engine: Engine, train: RealSet, val: RealSet, opts: RealDownstreamOptions,
               out: Path, done: PartCheckpoint, log: Log, task: str,
               classes: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    ti, tl = _class_labels(train, classes)
    vi, vl = _class_labels(val, classes)
    k = len(classes)
    if len(ti) == 0 or len(vi) == 0 or np.bincount(tl, minlength=k).min() == 0:
        raise ValueError(f"data: {task} needs FETAL_PLANES_DB scans of every class "
                         f"({', '.join(classes)}) in both splits (import fpdb)")
    syn, syn_lab = _synthetic_planes(engine, classes, train, opts, out, task, log)
    x_val = val.images[vi]
    cells: dict[str, Any] = {}
    per_scan: dict[str, dict[str, NDArray[np.float64]]] = {}
    sizes = sorted(set(opts.plane_sizes), key=lambda n: (n == 0, n))
    for n in sizes:
        for arm in ARMS:
            if arm == "synthetic" and n != sizes[0]:
                continue
            name = "synthetic" if arm == "synthetic" else f"{arm} N={n or 'all'}/class"
            preds = []
            n_real = 0
            for seed in opts.seeds:
                part = f"{task}/{name}/seed{seed}"
                got = done.get(part)
                if got is None:
                    t0 = time.perf_counter()
                    pos = np.concatenate([
                        np.nonzero(tl == c)[0][pick(n, int((tl == c).sum()),
                                                    2000 + 10 * seed + c)]
                        for c in range(k)])
                    picked, real_lab = ti[pos], tl[pos]
                    first, share = None, None
                    if arm == "real":
                        x, y = train.images[picked], real_lab
                    elif arm == "real+synthetic":
                        x = np.concatenate([train.images[picked], syn])
                        y = np.concatenate([real_lab, syn_lab])
                        first = np.arange(len(y)) < len(picked)  # the real scans
                        share = opts.reader_real_share
                    else:
                        x, y = syn, syn_lab
                    reader = train_classifier(x, y, k, TrainOptions(
                        steps=opts.reader_steps, seed=seed, first_share=share), first=first)
                    pred = predict_proba(reader, x_val).argmax(1)
                    got = {"n_real": 0 if arm == "synthetic" else len(picked),
                           "pred": pred.astype(int).tolist(),
                           "seconds": round(time.perf_counter() - t0, 1)}
                    done.put(part, got)
                    log(f"{task} {name} seed {seed}: accuracy "
                        f"{float((pred == vl).mean()):.3f} ({got['seconds']} s)")
                preds.append(np.array(got["pred"], dtype=np.int64))
                n_real = int(got["n_real"])
            hits = np.mean([(p == vl).astype(np.float64) for p in preds], axis=0)
            per_scan[name] = {"accuracy": hits}
            cells[name] = {
                "n_real": n_real, "n_synthetic": 0 if arm == "real" else len(syn),
                "seeds": len(preds), "accuracy": float(hits.mean()),
                "accuracy_interval": bootstrap_interval(hits, opts.bootstrap, opts.seed),
                "accuracy_per_seed": [float((p == vl).mean()) for p in preds],
                "macro_f1": float(np.mean([macro_f1(p, vl, k) for p in preds])),
                "macro_f1_interval": _f1_interval(preds, vl, k, min(opts.bootstrap, 300),
                                                  opts.seed)}
    return {"classes": {c: list(p) for c, p in classes.items()},
            "n_train": np.bincount(tl, minlength=k).tolist(),
            "n_val": np.bincount(vl, minlength=k).tolist(),
            "n_synthetic_per_class": opts.synth_per_class, "cells": cells,
            "paired": _paired(per_scan, opts)}


# ------------------------------------------------------------------------ microcephaly
def run_microcephaly(engine: Engine, val: RealSet, opts: RealDownstreamOptions, out: Path,
                     log: Log) -> dict[str, Any]:
    """Small requested heads read back by the all-real segmenter (see the module doc)."""
    from fetalflex.evaluation.segmenter import Segmenter

    seg_dir = out / "instruments" / "head_segmenter_all_real"
    if not (seg_dir / "config.json").is_file():
        return {"skipped": "needs the heads part with N = all (0) in head_sizes"}
    seg = Segmenter.load(seg_dir)
    vh, _, vmm, _ = _head_val(val)
    pick_idx = pick(opts.microcephaly_heads, len(vh.records), opts.seed + 3)
    rows: dict[str, Any] = {}
    for scale in (1.0, opts.microcephaly_scale):
        layouts, masks = [], []
        for i in pick_idx:
            s = head_shape(vh.records[int(i)])
            assert s is not None
            s = s.model_copy(update={"axes": (s.axes[0] * scale, s.axes[1] * scale)})
            made = ring_layout(vh, int(i), s, clear=False)
            assert made is not None  # clear=False always makes one
            layouts.append(made[0])
            masks.append(made[1])
        imgs = _generate(engine, layouts, [opts.seed * 100_000 + 70_000 + int(i)
                                           for i in pick_idx], opts, out / "cache",
                         f"microcephaly-x{scale:g}", log)
        read = segment_heads(seg, imgs)
        req = np.array([circumference_mm(m, vmm[int(i)]) for m, i in zip(masks, pick_idx,
                                                                          strict=True)])
        got = np.array([circumference_mm(r, vmm[int(i)]) for r, i in zip(read, pick_idx,
                                                                         strict=True)])
        ratio = got / req
        rows[f"x{scale:g}"] = {"n": len(pick_idx), "requested_hc_mm": float(np.mean(req)),
                               "measured_hc_mm": nanmean(got),
                               "ratio": nanmean(ratio),
                               "ratio_interval": bootstrap_interval(ratio, opts.bootstrap,
                                                                opts.seed),
                               "no_head_read": int(np.sum(~np.isfinite(got)))}
    return {"scale": opts.microcephaly_scale, "rows": rows,
            "cannot_measure": "sensitivity and specificity of a microcephaly screen on real "
                              "scans: no labelled microcephalic scan and no gestational age "
                              "independent of the head (HC18's GA is Hadlock's from the HC; "
                              "FETAL_PLANES_DB gives none)"}


# --------------------------------------------------------------------------------- run
def evaluate_downstream_real(engine: Engine, manifests: list[Path], out: Path,
                             opts: RealDownstreamOptions | None = None,
                             log: Log = print) -> dict[str, Any]:
    """Every part in ``opts.parts``; writes ``out/real_downstream.json``."""
    opts = opts or RealDownstreamOptions()
    t0 = time.perf_counter()
    train, val = load_real(manifests, "train"), load_real(manifests, "val")
    if train.images.shape[-1] != engine.cfg.image_size:
        raise ValueError(f"data: scans are {train.images.shape[-1]} px, the model makes "
                         f"{engine.cfg.image_size} px (import with --size "
                         f"{engine.cfg.image_size})")
    data_key = cache_key([hashlib.sha256(m.read_bytes()).hexdigest() for m in manifests])
    # options added later count only away from the value every run before them used (not
    # the current default: should that change, old checkpoints must not match new runs)
    later = {"synth_layouts": "empty", "reader_real_share": None,
             "segmenter_real_share": None}
    ident = json.dumps({"model": engine.backend.model_hash, "data": data_key,
                        "options": {k: v for k, v in asdict(opts).items()
                                    if k not in ("head_sizes", "plane_sizes", "seeds",
                                                 "parts", "bootstrap")
                                    and not (k in later and v == later[k])}},
                       sort_keys=True)
    out.mkdir(parents=True, exist_ok=True)
    done = PartCheckpoint(out / "real_downstream_parts.jsonl", ident)
    result: dict[str, Any] = {
        "model": engine.backend.model_hash, "appearance": opts.appearance,
        "guidance": effective_guidance(engine, opts.appearance, opts.guidance),
        "options": asdict(opts),
        "world": "real scans: validation split (by subject / patient) of the imported HC18 "
                 "and FETAL_PLANES_DB parts; models trained on the training split and / or "
                 "on generated scans",
        "n_train": len(train.records), "n_val": len(val.records)}
    if "heads" in opts.parts:
        result["heads"] = run_heads(engine, train, val, opts, out, done, log)
    if "planes" in opts.parts:
        result["planes"] = run_planes(engine, train, val, opts, out, done, log, "planes",
                                      PLANE_CLASSES)
    if "brain_planes" in opts.parts:
        result["brain_planes"] = run_planes(engine, train, val, opts, out, done, log,
                                            "brain_planes", BRAIN_CLASSES)
    if "microcephaly" in opts.parts:
        result["microcephaly"] = run_microcephaly(engine, val, opts, out, log)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "real_downstream.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
