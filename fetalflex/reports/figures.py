"""Saving report figures: matplotlib (Agg) to PNG, atomically, with provenance text chunks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fetalflex.about import __version__
from fetalflex.io.atomic import FILE_MODE

SYNTHETIC = "SYNTHETIC (FetalFlex-generated; not for clinical use)"


def image_panel(ax: Any, img: Any, title: str) -> None:
    """One image in a figure: grey for a uint8 image, as is for an RGB picture (layouts),
    0-255 without interpolation, titled, no ticks."""
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 4.0) -> tuple[Any, Any]:
    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)


def save_figure(fig: Any, path: Path, description: str) -> Path:
    """Write ``fig`` to ``path`` (PNG) via a temporary file; closes the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, FILE_MODE)
    try:
        if fig.get_layout_engine() is None:  # constrained layouts place titles themselves
            fig.tight_layout()
        fig.savefig(tmp, dpi=110, metadata={"Software": f"fetalflex {__version__}",
                                            "Description": description, "Synthetic": "true"})
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path


def finish_pair(axes: Any, xlabel: str, ylabels: tuple[str, str], titles: tuple[str, str],
                legend_size: int = 7) -> None:
    """The two side-by-side panels of a benchmark plot: log2 x axis, labels, legends."""
    for ax, ylabel, title in zip(axes, ylabels, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=legend_size)
