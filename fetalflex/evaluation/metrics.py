"""Anatomy adherence and texture statistics (phantom world only)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.structures import SHARED_STRUCTURES, label_id
from fetalflex.phantom.tissue import TISSUES

FLUID_LIKE = frozenset(n for n, t in TISSUES.items() if 0 < t.impedance < 1.55 or
                       (t.echo < 0.05 and n != "background"))


def fetal_labels(plane: str) -> list[int]:
    """The plane's own structures (not background, maternal tissue or amniotic fluid)."""
    return [label_id(s) for s in get_plane(plane).structures if s not in SHARED_STRUCTURES]


def structure_dice(requested: NDArray[np.uint8], read: NDArray[np.uint8],
                   labels: list[int]) -> dict[int, float]:
    """Dice per structure present in the requested map."""
    out: dict[int, float] = {}
    for lid in labels:
        a = requested == lid
        if not a.any():
            continue
        b = read == lid
        out[lid] = 2.0 * float(np.logical_and(a, b).sum()) / float(a.sum() + b.sum())
    return out


def mean_dice(requested: NDArray[np.uint8], read: NDArray[np.uint8], plane: str) -> float:
    d = structure_dice(requested, read, fetal_labels(plane))
    return float(np.mean(list(d.values()))) if d else float("nan")


def texture_stats(images: NDArray[np.uint8], maps: NDArray[np.uint8]) -> dict[str, Any]:
    """Intensity of tissue vs fluid and speckle SNR (mean/sd in tissue), over a batch."""
    fluid_ids = [label_id(n) for n in FLUID_LIKE]
    fluid = np.isin(maps, fluid_ids)
    tissue = (maps != label_id("background")) & ~fluid
    img = images.astype(np.float64)
    t_vals, f_vals = img[tissue], img[fluid]
    hist_t = np.histogram(t_vals, bins=32, range=(0, 256), density=True)[0]
    return {
        "tissue_mean": float(t_vals.mean()) if t_vals.size else float("nan"),
        "tissue_sd": float(t_vals.std()) if t_vals.size else float("nan"),
        "fluid_mean": float(f_vals.mean()) if f_vals.size else float("nan"),
        "speckle_snr": float(t_vals.mean() / (t_vals.std() + 1e-9)) if t_vals.size else 0.0,
        "tissue_fluid_contrast_db": float(20 * np.log10((t_vals.mean() + 1) /
                                                        (f_vals.mean() + 1)))
        if t_vals.size and f_vals.size else float("nan"),
        "_hist": hist_t.tolist(),
    }


def histogram_distance(a: list[float], b: list[float]) -> float:
    """Wasserstein-1 distance between two 32-bin densities on [0, 256), in grey levels."""
    pa, pb = np.asarray(a) * 8.0, np.asarray(b) * 8.0  # bin width 8
    return float(np.abs(np.cumsum(pa) - np.cumsum(pb)).sum() * 8.0)
