"""HC18 (fetal head circumference challenge) -> manifest.

Layout of the official release (van den Heuvel et al., PLoS ONE 2018; Zenodo
10.5281/zenodo.1322001, CC BY 4.0):

    training_set/NNN_HC.png, NNN_2HC.png ...        grey scans (800 x 540)
    training_set/NNN_HC_Annotation.png ...          the head outline: a 1-px white ellipse
    training_set_pixel_size_and_HC.csv              filename,pixel size(mm),head circumference (mm)

Each scan becomes a TT-plane record of real appearance: the image letterboxed to the
model's size; the label map with the **skull ring** along the sonographer's outline (an
ellipse fitted to the outline pixels, drawn as a ``ring`` shape, exactly as a request would
draw it) and everything else **not labelled** (the bands: background); ``field_mm`` =
the square's side in mm (longer side x pixel size); ``hc_mm`` from the CSV; ``ga_weeks``
from the HC by Hadlock et al. 1984 (Radiology 152:497): GA = 8.96 + 0.540 HC + 0.0003 HC^3
(HC in cm); subject = the number before ``_``.
"""

from __future__ import annotations

from pathlib import Path

from fetalflex.anatomy.biometry import GA_ACCEPTED_MAX, GA_ACCEPTED_MIN
from fetalflex.anatomy.layout import Shape
from fetalflex.data.importers.common import csv_rows, partial_label_map, positive_float, read_scan
from fetalflex.data.importers.ellipse import Ellipse, ellipse_from_outline
from fetalflex.data.importers.errors import DataImportError
from fetalflex.data.importers.split import DEFAULT_VAL_FRACTION, subject_split
from fetalflex.data.importers.squaring import Square, square_image
from fetalflex.data.importers.writer import ImportWriter

CSV_NAME = "training_set_pixel_size_and_HC.csv"
COLUMNS = ("filename", "pixel size(mm)", "head circumference (mm)")
SOURCE = "HC18"
CREDIT = ("HC18: T. L. A. van den Heuvel et al., PLoS ONE 13(8): e0200412, 2018; "
          "doi 10.5281/zenodo.1322001; CC BY 4.0")
# The fitted outline's circumference may differ from the CSV's HC by this share before the
# row is refused as a mismatched annotation.
HC_TOLERANCE = 0.05


def hadlock_ga_weeks(hc_mm: float) -> float:
    """GA (weeks) from head circumference, Hadlock et al. 1984."""
    hc = hc_mm / 10.0
    return 8.96 + 0.540 * hc + 0.0003 * hc ** 3


def head_shape(e: Ellipse, sq: Square) -> Shape:
    """The sonographer's ellipse (scan pixels) as a skull ring in the square's coordinates."""
    cx, cy = sq.px_to_unit(e.cx, e.cy)
    return Shape(structure="skull", kind="ring", center=(cx, cy),
                 axes=(e.a / sq.side, e.b / sq.side), angle=e.angle)


def import_hc18(root: Path, out: Path, size: int, val_fraction: float = DEFAULT_VAL_FRACTION,
                overwrite: bool = False, limit: int | None = None,
                sector: bool = True) -> Path:
    csv_path = root / CSV_NAME
    img_dir = root / "training_set"
    worst = 0.0
    with ImportWriter(out, SOURCE, CREDIT, overwrite, sector) as w:
        for n, (line, row) in enumerate(csv_rows(csv_path, COLUMNS)):
            if limit is not None and n >= limit:
                break
            name = row["filename"]
            if not name.endswith(".png") or "/" in name or "\\" in name:
                raise DataImportError(csv_path, f"filename: {name!r} is not a scan's file name "
                                      f"(NNN_HC.png)", line)
            px = positive_float(row["pixel size(mm)"], "pixel size(mm)", csv_path, line)
            hc = positive_float(row["head circumference (mm)"], "head circumference (mm)",
                                csv_path, line)
            scan = read_scan(img_dir / name, csv_path, line)
            ann_path = img_dir / name.replace(".png", "_Annotation.png")
            outline = read_scan(ann_path, csv_path, line) > 127
            if outline.shape != scan.shape:
                raise DataImportError(ann_path, f"size {outline.shape[::-1]} differs from the "
                                      f"scan's {scan.shape[::-1]}")
            try:
                e = ellipse_from_outline(outline)
            except ValueError as exc:
                raise DataImportError(ann_path, f"no head outline: {exc}") from None
            fitted = e.circumference() * px
            rel = abs(fitted - hc) / hc
            if rel > HC_TOLERANCE:
                raise DataImportError(csv_path, f"{name}: the outline's circumference is "
                                      f"{fitted:.1f} mm but the CSV says {hc:.1f} mm "
                                      f"(pixel size or annotation wrong?)", line)
            worst = max(worst, rel)
            image, sq = square_image(scan, size)
            lm = partial_label_map("TT", (head_shape(e, sq),), sq, size)
            ga = hadlock_ga_weeks(hc)
            subject = name.split("_")[0]
            w.add(f"hc18_{name.removesuffix('.png')}", image, lm, plane="TT",
                  appearance="real", subject=subject,
                  split=subject_split(SOURCE, subject, val_fraction),
                  field_mm=sq.side * px, hc_mm=hc,
                  ga_weeks=ga if GA_ACCEPTED_MIN <= ga <= GA_ACCEPTED_MAX else None,
                  structures=[head_shape(e, sq).model_dump()])
        w.notes["ga_formula"] = "Hadlock et al. 1984: 8.96 + 0.540 HC + 0.0003 HC^3 (cm)"
        w.notes["squaring"] = "letterbox (aspect kept), images area-resampled, labels nearest"
        w.notes["outline_vs_csv_hc_worst_relative"] = round(worst, 5)
        w.notes["size"] = size
        w.notes["val_fraction"] = val_fraction
    return out
