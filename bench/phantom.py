"""Phantom throughput benchmark: images/s at each size on this machine (figures, no asserts)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from fetalflex.data.phantom_set import write_phantom_set


def bench_phantom(sizes: tuple[int, ...] = (128, 256), n: int = 400,
                  workers: int = 0) -> list[dict[str, float]]:
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            write_phantom_set(Path(d), n, size=size, workers=workers, seed=1)
            dt = time.perf_counter() - t0
        rate = n / dt
        results.append({"size": size, "n": n, "seconds": round(dt, 2),
                        "images_per_s": round(rate, 1),
                        "minutes_for_10k": round(10_000 / rate / 60.0, 2)})
    return results
