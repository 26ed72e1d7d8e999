"""``fetalflex evaluate-real``: how real are the generated scans, measured on the real
validation scans only (split by subject at import; instruments trained on the training
split).

* **Plane reader**: the wide reader (``evaluation.classifier``) trained on the real
  training scans of the six planes with real data; its accuracy on generated scans beside
  its accuracy on real validation scans, per plane.
* **Frechet distance** on the reader's features (PCA to ``fd_dims`` axes fitted on the
  real training features), per plane group: generated (made from the layouts of one half
  of the validation subjects) vs the real other half, beside real half vs real half.
* **Head outline control** (HC18): a head segmenter trained on the training split reads
  the head on (a) real validation scans: its own Dice and HC error against the
  sonographer's outline; (b) scans generated for those outlines: Dice and HC error
  against the requested outline.
* **No copying**: each scan's highest normalized correlation with any real training scan,
  generated vs real validation.
* **Grey levels**: Wasserstein-1 between pixel histograms, generated vs real, per plane,
  beside real half vs real half.

Generated scans are made from the validation records' own layouts (the HC18 head ring,
or nothing labelled for FETAL_PLANES_DB), with their GA where known, so the generated set
mirrors the validation set request for request.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray

from fetalflex.evaluation.classifier import Reader, TrainOptions, features, predict_proba
from fetalflex.evaluation.classifier import train_classifier as train_reader
from fetalflex.evaluation.head import (
    circumference_mm,
    dice,
    head_targets,
    segment_heads,
    train_head_segmenter,
)
from fetalflex.evaluation.options import RealEvalOptions
from fetalflex.evaluation.real_data import PLANE_GROUPS, RealSet, head_mask, head_shape, load_real
from fetalflex.evaluation.realism import (
    FRD_NOT_INSTALLED,
    PCA,
    frd,
    frd_available,
    frechet_distance,
    grey_w1,
    nearest_correlation,
    split_halves,
    write_pngs,
)
from fetalflex.evaluation.segmenter import Segmenter
from fetalflex.generation import Engine
from fetalflex.request import SamplerName

REAL_PLANES: tuple[str, ...] = ("TV", "TT", "TC", "AC", "4CH", "FL")


def bootstrap_interval(values: NDArray[np.float64], n: int, seed: int) -> list[float]:
    """95 % bootstrap interval of the mean."""
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = rng.choice(v, (n, len(v))).mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def effective_guidance(engine: Engine, appearance: str, guidance: float | None) -> float:
    """The guidance a generated scan gets: the one asked, else the weights' recommended."""
    from fetalflex.request import GenerationRequest

    if guidance is not None:
        return guidance
    req = GenerationRequest.model_validate({"plane": "TT", "appearance": appearance})
    return engine.resolve(req).guidance


def effective_sampling(engine: Engine, opts: RealEvalOptions) -> dict[str, Any]:
    """Sampler, steps, guidance and arithmetic of every generated scan (asked, else
    recommended; the precision is the engine's graph: fp32 or int8)."""
    from fetalflex.request import GenerationRequest

    asked = {k: v for k, v in {"steps": opts.steps, "sampler": opts.sampler}.items()
             if v is not None}
    req = engine.resolve(GenerationRequest.model_validate(
        {"plane": "TT", "appearance": opts.appearance, **asked}))
    return {"sampler": req.sampler, "steps": req.steps,
            "guidance": effective_guidance(engine, opts.appearance, opts.guidance),
            "guidance_below_t": engine.cfg.sampling.guidance_below_t,
            **engine.cfg.sampling.contrast_record(opts.appearance),
            "precision": engine.backend.precision}


def reader_planes(train: RealSet) -> tuple[str, ...]:
    """The reader's classes: the planes of ``REAL_PLANES`` the training split has."""
    have = set(train.planes.tolist())
    return tuple(p for p in REAL_PLANES if p in have)


def _instruments(train: RealSet, out: Path, opts: RealEvalOptions, data_key: str,
                 log: Any) -> tuple[Reader, Segmenter, dict[str, float]]:
    """The plane reader and the head segmenter, trained on the training split once and kept
    under ``out/instruments`` (keyed by the data and the recipe)."""
    from safetensors.torch import load_file, save_file

    d = out / "instruments" / cache_key(data_key, opts.reader_steps, opts.segmenter_steps,
                                   opts.seed)
    classes = reader_planes(train)
    labels = np.array([classes.index(p) for p in train.planes], dtype=np.int64)
    seconds: dict[str, float] = {}
    reader = Reader(len(classes))
    if (d / "reader.safetensors").is_file():
        reader.load_state_dict(load_file(str(d / "reader.safetensors")))
        reader.eval()
    else:
        t0 = time.perf_counter()
        log(f"training the plane reader on {len(labels)} real training scans")
        reader = train_reader(train.images, labels, len(classes),
                              TrainOptions(steps=opts.reader_steps, seed=opts.seed))
        seconds["reader"] = round(time.perf_counter() - t0, 1)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in reader.state_dict().items()},
                  str(d / "reader.safetensors"))
    heads = train.subset(train.with_head())
    if not len(heads.records):
        raise ValueError("data: no training scan has a head outline (import HC18 or label "
                         "heads with a skull ring): the head segmenter cannot be trained")
    if (d / "segmenter" / "config.json").is_file():
        seg = Segmenter.load(d / "segmenter")
    else:
        t0 = time.perf_counter()
        log(f"training the head segmenter on {len(heads.records)} real training scans")
        seg = train_head_segmenter(heads, steps=opts.segmenter_steps, seed=opts.seed)
        seconds["segmenter"] = round(time.perf_counter() - t0, 1)
        seg.save(d / "segmenter", {"steps": opts.segmenter_steps, "data": data_key})
    return reader, seg, seconds


def generate_for(engine: Engine, val: RealSet, opts: RealEvalOptions, cache: Path,
                 log: Any) -> NDArray[np.uint8]:
    """One generated scan per validation record, from its layout and GA (seed =
    ``generation_seed`` x 10^6 + index); kept in ``cache`` (keyed by the model, the layouts
    the sampling as it runs and the seeds)."""
    base = opts.generation_seed * 10**6
    key = cache_key(engine.backend.model_hash, opts.appearance,
               effective_sampling(engine, opts),
               hashlib.sha256(val.label_maps.tobytes()).hexdigest(),
               [r.ga_weeks for r in val.records], base)
    path = cache / f"generated-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return np.asarray(z["images"])
    out = np.zeros_like(val.images)
    planes = val.planes
    t0 = time.perf_counter()
    for plane in REAL_PLANES:
        idx = np.nonzero(planes == plane)[0]
        for s in range(0, len(idx), opts.batch):
            chunk = idx[s:s + opts.batch]
            imgs, _ = engine.sample_layouts([val.layout(int(i)) for i in chunk],
                                            [base + int(i) for i in chunk],
                                            appearance=opts.appearance,
                                            guidance=opts.guidance, steps=opts.steps,
                                            sampler=cast(SamplerName | None, opts.sampler))
            out[chunk] = imgs
        log(f"generated {len(idx)} {plane} scans ({time.perf_counter() - t0:.0f} s)")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=out)
    return out


def _plane_rows(reader: Reader, classes: tuple[str, ...], val: RealSet,
                gen: NDArray[np.uint8], opts: RealEvalOptions) -> dict[str, Any]:
    planes = val.planes
    pr = predict_proba(reader, val.images).argmax(1)
    pg = predict_proba(reader, gen).argmax(1)
    rows: dict[str, Any] = {}
    for k, plane in enumerate(classes):
        m = planes == plane
        if not m.any():
            continue
        hit_r, hit_g = (pr[m] == k).astype(float), (pg[m] == k).astype(float)
        rows[plane] = {"n": int(m.sum()),
                       "real_accuracy": float(hit_r.mean()),
                       "real_interval": bootstrap_interval(hit_r, opts.bootstrap, opts.seed),
                       "generated_accuracy": float(hit_g.mean()),
                       "generated_interval": bootstrap_interval(hit_g, opts.bootstrap, opts.seed),
                       "ratio": float(hit_g.mean() / max(hit_r.mean(), 1e-9))}
    return rows


def _frd_rows(val: RealSet, gen: NDArray[np.uint8], out: Path, opts: RealEvalOptions,
              python: str | None, log: Any) -> dict[str, Any] | str:
    """FRD per plane group: generated half A vs real half B beside real A vs real B. The
    PNG folders it reads (``out/frd``) hold validation scans: local use only."""
    if not frd_available(python):
        return FRD_NOT_INSTALLED
    rows: dict[str, Any] = {}
    planes = val.planes
    for k, (group, members) in enumerate(PLANE_GROUPS.items()):
        idx = np.nonzero(np.isin(planes, members))[0]
        if len(idx) < 8:
            continue
        a, b = split_halves([val.subjects[i] for i in idx], opts.seed)
        a, b = idx[a], idx[b]
        d = out / "frd" / f"group{k}"
        if d.exists():
            shutil.rmtree(d)
        ga = write_pngs(d / "generated_a", gen[a])
        ra, rb = write_pngs(d / "real_a", val.images[a]), write_pngs(d / "real_b", val.images[b])
        t0 = time.perf_counter()
        g, f = frd(ga, rb, python), frd(ra, rb, python)
        rows[group] = {"frd_generated": g, "frd_floor": f, "frd_ratio": g / max(f, 1e-9)}
        log(f"FRD {group}: generated {g:.2f}, floor {f:.2f} ({time.perf_counter() - t0:.0f} s)")
    return rows


def _group_rows(reader: Reader, train: RealSet, val: RealSet, gen: NDArray[np.uint8],
                opts: RealEvalOptions) -> dict[str, Any]:
    pca = PCA(features(reader, train.images), opts.fd_dims)
    fr, fg = pca(features(reader, val.images)), pca(features(reader, gen))
    planes = val.planes
    rows: dict[str, Any] = {}
    for group, members in PLANE_GROUPS.items():
        idx = np.nonzero(np.isin(planes, members))[0]
        if len(idx) < 8:
            continue
        a, b = split_halves([val.subjects[i] for i in idx], opts.seed)
        a, b = idx[a], idx[b]
        floor = frechet_distance(fr[a], fr[b])
        fd = frechet_distance(fg[a], fr[b])
        w_floor = grey_w1(val.images[a], val.images[b])
        w_gen = grey_w1(gen[a], val.images[b])
        rows[group] = {"n_half": [len(a), len(b)], "fd_generated": fd, "fd_floor": floor,
                       "fd_ratio": fd / max(floor, 1e-9), "w1_generated": w_gen,
                       "w1_floor": w_floor, "w1_ratio": w_gen / max(w_floor, 1e-9),
                       "mean_grey_real": float(val.images[b].mean()),
                       "mean_grey_generated": float(gen[a].mean())}
    return rows


def _head_rows(seg: Segmenter, val: RealSet, gen: NDArray[np.uint8],
               opts: RealEvalOptions) -> dict[str, Any]:
    idx = val.with_head()
    if len(idx) == 0:
        return {}
    heads = val.subset(idx)
    size = val.images.shape[-1]
    ref = head_targets(heads).astype(bool)
    mm = np.array([(r.field_mm or float("nan")) / size for r in heads.records])
    # The requested HC: the outline's own circumference (equal to the CSV's within 0.03 %).
    req_hc = np.array([circumference_mm(head_mask(s, size), m) for s, m in
                       zip((head_shape(r) for r in heads.records), mm, strict=True)
                       if s is not None])
    csv_hc = np.array([r.hc_mm or float("nan") for r in heads.records])
    out: dict[str, Any] = {"n": len(idx)}
    for name, images, target in (("real", heads.images, csv_hc), ("generated", gen[idx], req_hc)):
        read = segment_heads(seg, images)
        d = np.array([dice(read[i], ref[i]) for i in range(len(idx))])
        hc = np.array([circumference_mm(read[i], mm[i]) for i in range(len(idx))])
        err = np.abs(hc - target)
        read_any = np.isfinite(err)
        out[name] = {"dice": float(np.mean(d)),
                     "dice_interval": bootstrap_interval(d, opts.bootstrap, opts.seed),
                     # over the scans where a head was read (the count of the others beside)
                     "hc_abs_error_mm": float(err[read_any].mean()) if read_any.any()
                     else float("nan"),
                     "hc_interval": bootstrap_interval(err, opts.bootstrap, opts.seed),
                     "no_head_read": int(np.isnan(hc).sum())}
    out["hc_error_ratio"] = out["generated"]["hc_abs_error_mm"] / max(
        out["real"]["hc_abs_error_mm"], 1e-9)
    return out


def twin_rows(engine: Engine, per_plane: int, appearance: str, seed: int,
              log: Any, guidance: float | None = None) -> dict[str, Any]:
    """Every anomaly preset in ``appearance``: normal scans generated from full template
    layouts (the phantom world's anatomy: real scans label no inner structures), each edited
    by the preset and repainted in the edited region; the edited pixels' mean grey change
    beside the phantom simulator's (same sign = bright stays bright, fluid stays dark)."""
    from fetalflex.anatomy.layout import rasterize
    from fetalflex.anatomy.planes import PLANE_CODES
    from fetalflex.anatomy.templates import sample_template
    from fetalflex.evaluation.evaluate import twin_signs

    rows: dict[str, Any] = {}
    size = engine.cfg.image_size
    for plane in PLANE_CODES:
        seeds = [seed + 1000 + i for i in range(per_plane)]
        layouts = [rasterize(sample_template(plane, s), size) for s in seeds]
        g = effective_guidance(engine, appearance, guidance)
        normal, _ = engine.sample_layouts(layouts, seeds, appearance=appearance, guidance=g)
        signs, _ = twin_signs(engine, layouts, seeds, normal, g, per_plane,
                              appearance=appearance)
        done = {name: r for name, r in signs.items() if r.get("n")}
        rows.update({f"{plane} {name}": r for name, r in done.items()})
        log(f"twins {plane}: " + ", ".join(f"{k} {'ok' if r['sign_ok'] else 'WRONG'}"
                                           for k, r in done.items()))
    return rows


def evaluate_real(engine: Engine, manifests: list[Path], out: Path,
                  opts: RealEvalOptions | None = None, log: Any = print,
                  baseline: Engine | None = None, frd_python: str | None = None,
                  ) -> dict[str, Any]:
    """Every figure of the module docstring; writes ``out/real_eval.json``."""
    opts = opts or RealEvalOptions()
    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)
    train, val = load_real(manifests, "train"), load_real(manifests, "val")
    data_key = cache_key([str(m.resolve()) for m in manifests],
                    [hashlib.sha256(m.read_bytes()).hexdigest() for m in manifests])
    reader, seg, trained = _instruments(train, out, opts, data_key, log)
    classes = reader_planes(train)
    gen = generate_for(engine, val, opts, out / "cache", log)
    nn_gen = nearest_correlation(gen, train.images)
    nn_real = nearest_correlation(val.images, train.images)
    result: dict[str, Any] = {
        "model": engine.backend.model_hash, "appearance": opts.appearance,
        "guidance": effective_guidance(engine, opts.appearance, opts.guidance),
        "sampling": effective_sampling(engine, opts),
        "options": asdict(opts), "world": "real scans: validation split (by subject) of the "
        "imported HC18 and FETAL_PLANES_DB parts; instruments trained on the training split",
        "n_train": len(train.records), "n_val": len(val.records),
        "reader_planes": list(classes),
        "planes": _plane_rows(reader, classes, val, gen, opts),
        "groups": _group_rows(reader, train, val, gen, opts),
        "head": _head_rows(seg, val, gen, opts),
        "copying": {"generated_mean": float(nn_gen.mean()), "real_val_mean": float(nn_real.mean()),
                    "generated_max": float(nn_gen.max()), "real_val_max": float(nn_real.max())},
        "instrument_training_s": trained,
        "frd": _frd_rows(val, gen, out, opts, frd_python, log),
        "twins": twin_rows(engine, opts.twins_per_plane, opts.appearance, opts.seed, log,
                           opts.guidance)
        if opts.twins_per_plane else {},
    }
    if baseline is not None:
        b_opts = RealEvalOptions(**{**asdict(opts), "appearance": "phantom"})
        bgen = generate_for(baseline, val, b_opts, out / "cache", log)
        result["baseline"] = {"model": baseline.backend.model_hash,
                              "planes": _plane_rows(reader, classes, val, bgen, opts),
                              "groups": _group_rows(reader, train, val, bgen, opts)}
        np.save(out / "cache" / "baseline_latest.npy", bgen)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "cache" / "generated_latest.npy", gen)
    (out / "real_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
