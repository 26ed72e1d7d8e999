"""One file-naming scheme for a sample's outputs, whoever writes them (``generate``, the
Python API, the gRPC client): ``<prefix>_<i:03d>`` plus a suffix per kind of file."""

from __future__ import annotations

from typing import Final

SUFFIXES: Final[dict[str, str]] = {
    "image": "", "label_map": "_labels", "layout_picture": "_layout",
    "abnormal_image": "_abnormal", "abnormal_label_map": "_abnormal_labels",
    "abnormal_layout_picture": "_abnormal_layout", "region": "_region",
}
IMAGE_KINDS: Final[tuple[str, ...]] = ("image", "abnormal_image")


def sample_stem(prefix: str, index: int) -> str:
    return f"{prefix}_{index:03d}"


def sample_file(prefix: str, index: int, kind: str, ext: str = "png") -> str:
    """The file name of one output of sample ``index`` (``ext`` for images; others PNG)."""
    return f"{sample_stem(prefix, index)}{SUFFIXES[kind]}.{ext if kind in IMAGE_KINDS else 'png'}"
