"""Real-scan tone calibration: a generator's real-appearance grey levels mapped onto the
grey levels of real *training* scans (``fetalflex calibrate-real``).

Real scans are darker at the dark end and brighter in the mid-tones than what our
generators write for the same layouts (session 25: on HC18 / FETAL_PLANES_DB head scans 33 %
of real pixels are black, 27 % of v6's and 14 % of its student's). ``calibrate_real``
samples the weights, as they sample by default, on the layouts of real training records,
pools those images and the records' own scans, and fits the monotone quantile map between
them (``fetalflex.io.tone.fit_tone_curve``); composed with the curve the weights
already carry, it becomes their ``sampling.tone_curve["real"]``. Only the training split is
read: the validation scans measure the result (``fetalflex evaluate-real``). The weights'
tensors are copied byte for byte; the config (and so the model id) changes.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fetalflex.evaluation.real_data import load_real
from fetalflex.evaluation.realism import grey_w1
from fetalflex.generation import Engine
from fetalflex.io.tone import apply_tone, black_fraction, compose, fit_tone_curve, identity_curve

Log = Callable[[str], None]
CALIBRATION_SCANS = 512  # real training scans (and as many generated images) pooled
PLANE_MIN_SCANS = 40  # a plane with at least these many of them gets a curve of its own
REPORT_NAME = "tone_calibration.json"


def darken_only_below(curve: tuple[int, ...], level: int) -> tuple[int, ...]:
    """``curve`` kept only where it darkens, and only below grey ``level``; unchanged
    (identity) elsewhere. Still monotone: the minimum of two monotone curves, below
    ``level`` and identity from it (0: ``curve`` itself)."""
    if level <= 0:
        return curve
    return tuple(min(c, v) if v < level else v for v, c in enumerate(curve))


def _stats(images: NDArray[np.uint8], real: NDArray[np.uint8]) -> dict[str, float]:
    return {"black_fraction": black_fraction(images),
            "mean_grey": round(float(images.mean()), 2),
            "w1_to_real": round(grey_w1(images, real), 3)}


def calibrate_real(engine: Engine, weights: Path, manifests: list[Path], out: Path,
                   n: int = CALIBRATION_SCANS, seed: int = 0, batch: int = 16,
                   plane_min: int = PLANE_MIN_SCANS, darken_below: int = 0,
                   log: Log = print) -> dict[str, Any]:
    """Fit ``weights``' real-appearance tone curve on ``n`` real training scans of
    ``manifests`` (``engine``: those weights loaded) and write the weights with it to
    ``out`` (a new folder); returns the report also written there (``REPORT_NAME``).
    A plane with at least ``plane_min`` of the scans (0: none) gets a curve of its own,
    fitted on its scans alone; the others use the pooled one. ``darken_below`` > 0: every
    fitted curve only darkens, and only below that grey level (``darken_only_below``)."""
    if "real" not in engine.cfg.appearances:
        raise ValueError(f"weights: {weights} do not serve the real appearance (they serve: "
                         f"{', '.join(engine.cfg.appearances) or 'phantom'}); calibrate "
                         f"weights trained on real scans")
    if n < 1:
        raise ValueError(f"n: at least one scan, got {n}")
    if engine.cfg.sampling.tone_curve_by_plane.get("real"):
        raise ValueError(f"weights: {weights} already carry per-plane real tone curves; "
                         f"calibrate the weights they were made from")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out: {out} exists and is not empty; choose a new folder")
    train = load_real(manifests, "train")
    if train.images.shape[-1] != engine.cfg.image_size:
        raise ValueError(f"data: the real scans are {train.images.shape[-1]} px, the weights "
                         f"make {engine.cfg.image_size} px; import them at the model's size")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train.records), min(n, len(train.records)), replace=False))
    sub = train.subset(pick)
    gen = np.zeros_like(sub.images)
    planes = sub.planes
    for plane in sorted(set(planes.tolist())):
        idx = np.nonzero(planes == plane)[0]
        for s in range(0, len(idx), batch):
            chunk = idx[s:s + batch]
            imgs, _ = engine.sample_layouts([sub.layout(int(i)) for i in chunk],
                                            [seed * 10**6 + int(pick[i]) for i in chunk],
                                            appearance="real")
            gen[chunk] = imgs
        log(f"sampled {len(idx)} {plane} layouts of real training scans")
    before = engine.tone_curve("real") or identity_curve()
    # from what the weights write now
    fit = darken_only_below(fit_tone_curve(gen, sub.images), darken_below)
    curve = compose(fit, before)
    after = apply_tone(gen, fit)
    by_plane: dict[str, tuple[int, ...]] = {}
    plane_rows: dict[str, Any] = {}
    for plane in sorted(set(planes.tolist())):
        idx = np.nonzero(planes == plane)[0]
        if plane_min <= 0 or len(idx) < plane_min:
            continue
        own = darken_only_below(fit_tone_curve(gen[idx], sub.images[idx]), darken_below)
        by_plane[plane] = compose(own, before)
        after[idx] = apply_tone(gen[idx], own)
        plane_rows[plane] = {"generated": _stats(gen[idx], sub.images[idx]),
                             "calibrated": _stats(after[idx], sub.images[idx])}
    report: dict[str, Any] = {
        "weights": str(weights), "model": engine.backend.model_hash,
        "scans": len(pick), "planes": {p: int((planes == p).sum())
                                       for p in sorted(set(planes.tolist()))},
        "seed": seed, "world": "real scans, training split only (fitted on these)",
        "real": _stats(sub.images, sub.images), "generated": _stats(gen, sub.images),
        "calibrated": _stats(after, sub.images),
        "largest_shift": int(np.max(np.abs(np.subtract(curve, before)))),
        "plane_min": plane_min, "darken_below": darken_below,
        "own_curve_planes": plane_rows}
    log(f"tone curve real ({len(pick)} training scans): black pixels "
        f"{report['generated']['black_fraction']:.3f} -> "
        f"{report['calibrated']['black_fraction']:.3f} (real "
        f"{report['real']['black_fraction']:.3f}); grey W1 to real "
        f"{report['generated']['w1_to_real']:.2f} -> {report['calibrated']['w1_to_real']:.2f}")
    cfg = engine.cfg
    curves = {**cfg.sampling.tone_curve, "real": curve}
    by = {**cfg.sampling.tone_curve_by_plane, "real": by_plane} if by_plane else \
        cfg.sampling.tone_curve_by_plane
    new = cfg.model_copy(update={"sampling": cfg.sampling.model_copy(
        update={"tone_curve": curves, "tone_curve_by_plane": by})})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        shutil.copy2(weights / "model.safetensors", tmp / "model.safetensors")
        new.save(tmp / "config.json")
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"calibrated weights: {out}")
    return report
