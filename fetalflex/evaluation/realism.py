"""Distribution distances between generated and real scans, each beside its real-vs-real
floor: Frechet distance on features, grey-level Wasserstein-1, nearest-training-scan
correlation (copying)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import linalg
from scipy.stats import wasserstein_distance


def frechet_distance(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Frechet distance between Gaussians fitted to feature rows ``a`` and ``b``."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s1, s2 = np.atleast_2d(s1), np.atleast_2d(s2)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


class PCA:
    """Principal axes fitted on reference features (the real training scans): the Frechet
    distance of a few dozen scans is measured in a space smaller than the scan count."""

    def __init__(self, x: NDArray[np.float64], dims: int) -> None:
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.axes = vt[:dims]

    def __call__(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray((x - self.mean) @ self.axes.T, dtype=np.float64)


def grey_w1(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    """Wasserstein-1 (grey levels) between the pixel histograms of two image sets."""
    ha = np.bincount(a.ravel(), minlength=256).astype(np.float64)
    hb = np.bincount(b.ravel(), minlength=256).astype(np.float64)
    v = np.arange(256, dtype=np.float64)
    return float(wasserstein_distance(v, v, ha, hb))


def _normalized(images: NDArray[np.uint8], side: int) -> NDArray[np.float64]:
    n, h, _ = images.shape
    side = min(side, h)
    f = h // side
    x = images[:, :side * f, :side * f].reshape(n, side, f, side, f).mean((2, 4))
    x = x.reshape(n, -1)
    x = x - x.mean(1, keepdims=True)
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9),
                      dtype=np.float64)


def nearest_correlation(queries: NDArray[np.uint8], bank: NDArray[np.uint8],
                        side: int = 64) -> NDArray[np.float64]:
    """Each query's highest normalized correlation with any image of ``bank`` (both
    area-downsampled to ``side``): near 1 means a near copy."""
    q, b = _normalized(queries, side), _normalized(bank, side)
    return np.asarray((q @ b.T).max(1), dtype=np.float64)


def split_halves(subjects: list[str], seed: int = 0) -> tuple[NDArray[np.int64],
                                                              NDArray[np.int64]]:
    """Two disjoint halves of a set, split by subject (frames of one subject together)."""
    uniq = sorted(set(subjects))
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    first = set(uniq[: (len(uniq) + 1) // 2])
    a = np.array([i for i, s in enumerate(subjects) if s in first], dtype=np.int64)
    b = np.array([i for i, s in enumerate(subjects) if s not in first], dtype=np.int64)
    return a, b


FRD_NOT_INSTALLED = ("not measured: frd-score (with pyradiomics) is not installed here; "
                     "install it (pip install frd-score pyradiomics) or pass --frd-python "
                     "with an interpreter that has it")


def frd(dir_a: Path, dir_b: Path, python: str | None = None) -> float:
    """Frechet Radiomics Distance (frd-score, v1 defaults; no downloaded weights) between
    two folders of PNGs, in-process when ``frd_score`` imports, else with ``python``."""
    if python is None:
        from frd_score.frd import compute_frd  # type: ignore[import-not-found]  # optional

        return float(compute_frd([str(dir_a), str(dir_b)], num_workers=1))
    code = ("import sys; from frd_score.frd import compute_frd; "
            "print('FRD=%r' % float(compute_frd(sys.argv[1:3], num_workers=1)))")
    done = subprocess.run([python, "-c", code, str(dir_a), str(dir_b)], capture_output=True,
                          text=True, check=False)
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("FRD="):
            return float(line.removeprefix("FRD="))
    raise RuntimeError(f"frd-score under {python} failed: {done.stderr.strip()[-500:]}")


def frd_available(python: str | None) -> bool:
    if python is not None:
        return Path(python).is_file()
    return importlib.util.find_spec("frd_score") is not None


def write_pngs(folder: Path, images: NDArray[np.uint8]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return folder
