"""What every importer does with one scan: read it, square it, label it."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from fetalflex.anatomy.layout import Shape, StructureList, rasterize
from fetalflex.anatomy.structures import BACKGROUND, UNLABELLED
from fetalflex.data.importers.errors import DataImportError
from fetalflex.data.importers.squaring import Square


def read_scan(path: Path, where: Path, line: int | None) -> NDArray[np.uint8]:
    """A scan as grey uint8 (colour scans are converted), or an error naming the CSV line."""
    if not path.is_file():
        raise DataImportError(where, f"image file not found: {path}", line)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataImportError(path, f"cannot read the image ({exc})") from None


def csv_rows(path: Path, required: tuple[str, ...], delimiter: str = ","
             ) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV whose header has ``required`` columns (exact names)."""
    if not path.is_file():
        raise DataImportError(path, "CSV file not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataImportError(path, f"missing column(s) {missing}; the header is {header} "
                                  f"(separator {delimiter!r})", 1)
        for row in reader:
            clean = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not any(clean.values()):
                continue
            yield reader.line_num, clean


def positive_float(value: str, column: str, where: Path, line: int) -> float:
    try:
        v = float(value)
    except ValueError:
        raise DataImportError(where, f"{column}: {value!r} is not a number", line) from None
    if not np.isfinite(v) or v <= 0:
        raise DataImportError(where, f"{column}: must be a positive number, got {value!r}",
                              line)
    return v


def partial_label_map(plane: str, shapes: tuple[Shape, ...], sq: Square, size: int,
                      ) -> NDArray[np.uint8]:
    """The label map of a scan labelled only in part: ``shapes`` drawn (the same rasterizer
    as a request's structure list with ``fill: unlabelled``), the letterbox bands
    background (outside the scan), everything else not labelled."""
    lm = rasterize(StructureList(plane=plane, field_mm=100.0, structures=shapes,
                                 fill="unlabelled", sector="none"), size).label_map.copy()
    lm[~sq.inside(size)] = BACKGROUND
    return lm


def unlabelled_map(sq: Square, size: int) -> NDArray[np.uint8]:
    lm = np.full((size, size), UNLABELLED, dtype=np.uint8)
    lm[~sq.inside(size)] = BACKGROUND
    return lm

