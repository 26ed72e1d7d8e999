"""Downstream utility: can FetalFlex-synthesized abnormal images replace abnormal data?

The paper's central claim, tested in the phantom world. For every anomaly preset, a small
classifier (``classifier.Reader``) learns normal vs abnormal under four regimes and is
tested on the same held-out simulator phantoms (normal and abnormal of that preset):

* ``synthetic``: real normal phantoms + FetalFlex twins (``twins.py``): each twin is a
  real normal phantom whose anatomy was edited by the preset and repainted in the edit
  region (no abnormal phantom is ever used). As a control against "synthetic-looking"
  shortcuts the normal class also holds the same phantoms repainted in the same region
  with their own, unedited layout, so the repaint itself carries no label.
* ``synthetic_no_control``: the same without the repainted normals (the naive recipe).
* ``normal_only``: anomaly detection with normal data only: Mahalanobis distance of a
  plane classifier's pooled features to the normal features of the image's plane.
* ``oracle``: real normal phantoms + as many real abnormal phantoms of the preset.

A second experiment asks whether synthetic *normal* images (plain generation from template
layouts) help a 7-plane classifier trained on a small real set: accuracy against the
real-set size, with and without the synthetic images.

Seeds come from disjoint ranges per role, so no test phantom is a training phantom.
Everything here is about phantoms, not patients.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.stats import rankdata

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.backends.backends import Backend
from fetalflex.data.phantom_set import render_phantom
from fetalflex.evaluation.classifier import (
    GaussianScore,
    TrainOptions,
    auc,
    auc_interval,
    features,
    predict_proba,
    train_classifier,
)
from fetalflex.evaluation.options import DownstreamOptions
from fetalflex.evaluation.parts import PartCheckpoint
from fetalflex.evaluation.twins import PhantomPool, cached_twins, planes_of
from fetalflex.generation import Engine
from fetalflex.request import GenerationRequest, RepaintSettings

# Disjoint seed ranges per role (x 1e6), plane offset x 1e5.
NORMAL_TRAIN, ORACLE, TEST_NORMAL, TEST_ABNORMAL, PLANE_TEST, SYNTH_NOISE = range(1, 7)


def _seed(opts: DownstreamOptions, role: int, plane: str, i: int) -> int:
    return opts.seed * 10_000_000 + role * 1_000_000 + PLANE_CODES.index(plane) * 100_000 + i


def _render(opts: DownstreamOptions, role: int, plane: str, n: int, size: int,
            preset: str | None = None) -> PhantomPool:
    pool = PhantomPool()
    for i in range(n):
        img, lay, _ = render_phantom(plane, _seed(opts, role, plane, i), size, preset)
        pool.add(img, lay)
    return pool


def _binary(normal: NDArray[np.uint8], abnormal: NDArray[np.uint8]
            ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    x = np.concatenate([normal, abnormal])
    y = np.concatenate([np.zeros(len(normal), np.int64), np.ones(len(abnormal), np.int64)])
    return x, y


def run_downstream(backend: Backend, opts: DownstreamOptions, out: Path,
                   progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Both experiments; writes ``downstream.json``, ``downstream.md`` and PNG figures."""
    out.mkdir(parents=True, exist_ok=True)
    size = backend.config.image_size
    engine = Engine(backend)
    t0 = time.perf_counter()
    normals = {p: _render(opts, NORMAL_TRAIN, p, opts.normals_per_plane, size)
               for p in PLANE_CODES}
    progress(f"rendered {opts.normals_per_plane} normal phantoms per plane")
    synth = cached_twins(engine, normals, opts.presets, opts.synth_per_preset,
                         opts.repaint_batch, lambda p, i: _seed(opts, SYNTH_NOISE, p, i),
                         out / "synthetic_set.npz",
                         {"normals_per_plane": opts.normals_per_plane, "seed": opts.seed},
                         progress, guidance=opts.guidance, control_scale=opts.control_scale)

    # Finished parts (one preset under one regime, one plane-classifier size) are kept as
    # they finish, one line each, so an interrupted run resumes where it stopped and a run
    # asking for more presets, regimes or sizes trains only those: the classifiers cost
    # more than an hour at 128 x 128 on two cores.
    done = PartCheckpoint(out / "downstream_parts.jsonl", _identity(backend, opts, size))
    detectors: list[tuple[Any, dict[str, GaussianScore]]] = []

    def detector(s_i: int) -> tuple[Any, dict[str, GaussianScore]]:
        # Anomaly-detection baseline: one 7-plane classifier on the real normals.
        if not detectors:
            plane_x = np.concatenate([normals[p].stack() for p in PLANE_CODES])
            plane_y = np.repeat(np.arange(len(PLANE_CODES)), opts.normals_per_plane)
            for s in opts.train_seeds:
                m = train_classifier(plane_x, plane_y, len(PLANE_CODES),
                                     _train_options(opts, s))
                gauss = {p: GaussianScore(features(m, normals[p].stack()))
                         for p in PLANE_CODES}
                detectors.append((m, gauss))
        return detectors[s_i]

    rows: list[dict[str, Any]] = []
    for name in opts.presets:
        planes = planes_of(name)
        row: dict[str, Any] = {"preset": name, "planes": planes,
                               "n_train_abnormal": len(synth.twins[name]),
                               "n_skipped_no_change": synth.skipped[name],
                               "n_test": 2 * opts.test_per_preset}
        kept = {c: done.get(f"anomaly/{name}/{c}") for c in opts.conditions}
        if all(v is not None for v in kept.values()):
            rows.append({**row, **kept})
            progress(f"reusing the finished rows of {name} in {done.path}")
            continue
        test_n = np.concatenate([_render(opts, TEST_NORMAL, p, n_p, size).stack()
                                 for p, n_p in _split(planes, opts.test_per_preset)])
        test_a = np.concatenate([_render(opts, TEST_ABNORMAL, p, n_p, size, name).stack()
                                 for p, n_p in _split(planes, opts.test_per_preset)])
        test_planes = [p for p, n_p in _split(planes, opts.test_per_preset) for _ in range(n_p)]
        x_test, y_test = _binary(test_n, test_a)
        positive = y_test.astype(bool)
        oracle = np.concatenate([_render(opts, ORACLE, p, n_p, size, name).stack()
                                 for p, n_p in _split(planes, len(synth.twins[name]))])
        real_normal = np.concatenate([normals[p].stack() for p in planes])
        train_sets = {
            "synthetic": _binary(np.concatenate([real_normal, synth.controls[name]]),
                                 synth.twins[name]),
            "synthetic_no_control": _binary(real_normal, synth.twins[name]),
            "oracle": _binary(real_normal, oracle),
        }
        for cond in opts.conditions:
            if kept[cond] is not None:
                row[cond] = kept[cond]
                continue
            seed_scores = []
            for s_i, s in enumerate(opts.train_seeds):
                if cond == "normal_only":
                    m, gauss = detector(s_i)
                    f = features(m, np.concatenate([test_n, test_a]))
                    both = test_planes + test_planes
                    sc = np.array([gauss[p](f[i:i + 1])[0] for i, p in enumerate(both)])
                else:
                    x, y = train_sets[cond]
                    m = train_classifier(x, y, 2, _train_options(opts, s))
                    sc = predict_proba(m, x_test)[:, 1]
                seed_scores.append(sc)
            aucs = [auc(sc, positive) for sc in seed_scores]
            lo, hi = auc_interval(seed_scores, positive, reps=400)
            row[cond] = {"auc_mean": round(float(np.mean(aucs)), 4),
                         "auc_per_seed": [round(a, 4) for a in aucs],
                         "auc_ci95": [round(lo, 4), round(hi, 4)],
                         "auc_ensemble": round(auc(seed_ensemble(seed_scores), positive), 4)}
            done.put(f"anomaly/{name}/{cond}", row[cond])
        rows.append(row)
        progress(json.dumps({k: (v["auc_mean"] if isinstance(v, dict) else v)
                             for k, v in row.items()}))

    plane_rows = (plane_augmentation(engine, normals, opts, size, done, progress)
                  if opts.plane_experiment else [])
    result = {
        "what": "downstream utility in the phantom world (simulator phantoms, not patients)",
        "image_size": size, "model_id": backend.model_id, "model_hash": backend.model_hash,
        "options": asdict(opts), "synthesis": {
            "repaint": RepaintSettings().model_dump(), "guidance": opts.guidance,
            "control_scale": opts.control_scale, "denoiser_calls": synth.calls,
            "seconds": round(synth.seconds, 1),
            "images": int(sum(2 * len(v) for v in synth.twins.values()))},
        "anomaly": rows, "plane_classifier": plane_rows,
        "reader": {"name": opts.reader, "steps": opts.classifier_steps,
                   **asdict(_train_options(opts, 0).recipe())},
        "seconds": round(time.perf_counter() - t0, 1),
        "threads": torch.get_num_threads(),
    }
    (out / "downstream.json").write_text(json.dumps(result, indent=2) + "\n")
    from fetalflex.reports.downstream_report import write_downstream_report

    write_downstream_report(result, synth, out)
    return result


def _train_options(opts: DownstreamOptions, seed: int) -> TrainOptions:
    return TrainOptions(steps=opts.classifier_steps, seed=seed, reader=opts.reader)


def seed_ensemble(seed_scores: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    """One score from the classifiers of several training seeds: the mean of their
    within-test-set ranks (scales differ between seeds and regimes; ranks do not, and no
    seed outweighs the others by being more confident). Steadier than any one seed: the
    readers of small data sets find a small local sign on some seeds and not on others."""
    return np.mean([rankdata(sc) / len(sc) for sc in seed_scores], axis=0)


def _identity(backend: Backend, opts: DownstreamOptions, size: int) -> str:
    """What a finished part depends on: the model and every option but the lists of parts
    asked for (presets, regimes, plane-classifier sizes)."""
    o = {k: v for k, v in asdict(opts).items()
         if k not in ("presets", "conditions", "plane_sizes", "plane_experiment")}
    return json.dumps({"model": backend.model_hash, "size": size, "options": o,
                       "reader": asdict(_train_options(opts, 0).recipe()),
                       "repaint": RepaintSettings().model_dump()}, sort_keys=True)


def _split(planes: list[str], n: int) -> list[tuple[str, int]]:
    """n items over planes as evenly as possible: [(plane, count)]."""
    base, extra = divmod(n, len(planes))
    return [(p, base + (1 if i < extra else 0)) for i, p in enumerate(planes)]


def plane_augmentation(engine: Engine, normals: dict[str, PhantomPool], opts: DownstreamOptions,
                       size: int, done: PartCheckpoint, progress: Callable[[str], None] = print
                       ) -> list[dict[str, Any]]:
    """7-plane accuracy vs real images per plane, with and without synthetic normals; each
    size (and the synthetic-only row) is a part of ``done``."""
    parts = [f"plane/{n}" for n in opts.plane_sizes] + ["plane/synthetic_only"]
    rows: list[dict[str, Any]] = [done.get(p) for p in parts]
    if all(r is not None for r in rows):
        progress(f"reusing the finished plane-classifier rows in {done.path}")
        return rows
    synth_x, synth_y = [], []
    for ci, p in enumerate(PLANE_CODES):
        res = engine.run(GenerationRequest(plane=p, n=opts.plane_synth_per_plane,
                                           seed=_seed(opts, SYNTH_NOISE, p, 90_000)))
        synth_x += [s.image for s in res.samples]
        synth_y += [ci] * len(res.samples)
    sx, sy = np.stack(synth_x), np.array(synth_y, np.int64)
    test = [(_render(opts, PLANE_TEST, p, opts.plane_test_per_plane, size).stack(), ci)
            for ci, p in enumerate(PLANE_CODES)]
    tx = np.concatenate([t[0] for t in test])
    ty = np.concatenate([np.full(len(t[0]), t[1]) for t in test])
    for i, n in enumerate(opts.plane_sizes):
        if rows[i] is not None:
            continue
        rx = np.concatenate([normals[p].stack()[:n] for p in PLANE_CODES])
        ry = np.repeat(np.arange(len(PLANE_CODES)), n)
        row: dict[str, Any] = {"real_per_plane": n,
                               "synthetic_per_plane": opts.plane_synth_per_plane}
        for cond, (x, y) in {"real_only": (rx, ry),
                             "real_plus_synthetic": (np.concatenate([rx, sx]),
                                                     np.concatenate([ry, sy]))}.items():
            row[cond] = _plane_accuracy(x, y, tx, ty, opts)
        rows[i] = row
        done.put(parts[i], row)
        progress(json.dumps(row))
    if rows[-1] is None:
        # Synthetic only: how well do generated images alone teach the planes?
        rows[-1] = {"real_per_plane": 0, "synthetic_per_plane": opts.plane_synth_per_plane,
                    "synthetic_only": _plane_accuracy(sx, sy, tx, ty, opts)}
        done.put(parts[-1], rows[-1])
        progress(json.dumps(rows[-1]))
    return rows


def _plane_accuracy(x: NDArray[np.uint8], y: NDArray[np.int64], tx: NDArray[np.uint8],
                    ty: NDArray[np.int64], opts: DownstreamOptions) -> dict[str, Any]:
    """Test accuracy of 7-plane classifiers trained on (x, y), one per training seed, and
    of their ensemble (mean of the seeds' class probabilities)."""
    probs = [predict_proba(train_classifier(x, y, len(PLANE_CODES), _train_options(opts, s)),
                           tx) for s in opts.train_seeds]
    accs = [float((p.argmax(1) == ty).mean()) for p in probs]
    ens = float((np.mean(probs, axis=0).argmax(1) == ty).mean())
    return {"accuracy_mean": round(float(np.mean(accs)), 4),
            "accuracy_per_seed": [round(a, 4) for a in accs],
            "accuracy_ensemble": round(ens, 4)}
