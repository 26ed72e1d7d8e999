"""A user's own scans -> manifest: a folder of images and a CSV that says their planes.

CSV (comma-separated, header required): ``image`` and ``plane`` (a plane code, any case);
optional ``label_map`` (a PNG of label ids, 255 = not labelled, same size as the image),
``subject`` (for the split: all frames of a subject on one side; default: the image's
name, i.e. every image its own subject), ``pixel_size_mm`` (gives ``field_mm``),
``ga_weeks``. Paths are relative to the CSV's folder. Without a label map a scan is
"not labelled" everywhere (the model learns its look from the plane alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fetalflex.anatomy.biometry import GA_ACCEPTED_MAX, GA_ACCEPTED_MIN
from fetalflex.anatomy.planes import PLANE_CODES, canonical_code
from fetalflex.anatomy.structures import NUM_LABELS, UNLABELLED
from fetalflex.data.importers.common import csv_rows, positive_float, read_scan, unlabelled_map
from fetalflex.data.importers.errors import DataImportError
from fetalflex.data.importers.split import DEFAULT_VAL_FRACTION, subject_split
from fetalflex.data.importers.squaring import square_image, square_label_map
from fetalflex.data.importers.writer import ImportWriter

COLUMNS = ("image", "plane")


def import_folder(csv_path: Path, out: Path, size: int, source: str = "user",
                  credit: str = "the user's own scans",
                  val_fraction: float = DEFAULT_VAL_FRACTION, overwrite: bool = False,
                  sector: bool = True) -> Path:
    root = csv_path.parent
    with ImportWriter(out, source, credit, overwrite, sector) as w:
        for line, row in csv_rows(csv_path, COLUMNS):
            rel = row["image"]
            plane = canonical_code(row["plane"])
            if plane not in PLANE_CODES:
                raise DataImportError(csv_path, f"plane: {row['plane']!r} is not a plane; use "
                                      f"one of {', '.join(PLANE_CODES)}", line)
            scan = read_scan(root / rel, csv_path, line)
            image, sq = square_image(scan, size)
            if row.get("label_map"):
                lab_path = root / row["label_map"]
                if not lab_path.is_file():
                    raise DataImportError(csv_path, f"label_map: file not found: {lab_path}",
                                          line)
                with Image.open(lab_path) as im:
                    if im.mode not in ("L", "P"):
                        raise DataImportError(lab_path, f"a label map must be an 8-bit grey or "
                                              f"palette PNG of label ids, not mode {im.mode}")
                    lab = np.asarray(im, dtype=np.uint8)
                if lab.shape != scan.shape:
                    raise DataImportError(lab_path, f"size {lab.shape[::-1]} differs from the "
                                          f"image's {scan.shape[::-1]}")
                bad = sorted(set(np.unique(lab).tolist()) - set(range(NUM_LABELS))
                             - {UNLABELLED})
                if bad:
                    raise DataImportError(lab_path, f"unknown label ids {bad} (ids 0.."
                                          f"{NUM_LABELS - 1}, 255 = not labelled; "
                                          f"`fetalflex planes` lists them)")
                lm = square_label_map(lab, size)
            else:
                lm = unlabelled_map(sq, size)
            subject = row.get("subject") or Path(rel).stem
            fields: dict[str, object] = {}
            if row.get("pixel_size_mm"):
                fields["field_mm"] = sq.side * positive_float(row["pixel_size_mm"],
                                                              "pixel_size_mm", csv_path, line)
            if row.get("ga_weeks"):
                ga = positive_float(row["ga_weeks"], "ga_weeks", csv_path, line)
                if not GA_ACCEPTED_MIN <= ga <= GA_ACCEPTED_MAX:
                    raise DataImportError(csv_path, f"ga_weeks: must be within "
                                          f"{GA_ACCEPTED_MIN}..{GA_ACCEPTED_MAX}, got {ga}", line)
                fields["ga_weeks"] = ga
            stem = Path(rel).with_suffix("").as_posix()
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
            w.add(f"{source}_{line:05d}_{safe}", image, lm, plane=plane, appearance="real",
                  subject=subject, split=subject_split(source, subject, val_fraction),
                  **fields)
        w.notes["squaring"] = "letterbox (aspect kept), images area-resampled, labels nearest"
        w.notes["size"] = size
    return out
