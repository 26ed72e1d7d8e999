"""FETAL_PLANES_DB -> manifest.

Layout of the official release (Burgos-Artizzu et al., Scientific Reports 10:10200, 2020;
Zenodo 10.5281/zenodo.3904280, CC BY 4.0):

    Images/<Image_name>.png                         scans (original sizes; a re-export may
                                                    hold <Image_name>.jpg instead: both work)
    FETAL_PLANES_DB_data.csv                        Image_name;Patient_num;Plane;Brain_plane;
                                                    Operator;US_Machine;Train

Planes: Fetal abdomen -> AC, Fetal femur -> FL, Fetal thorax -> 4CH, Fetal brain with
Brain_plane Trans-thalamic / Trans-ventricular / Trans-cerebellum -> TT / TV / TC. Rows of
other planes (maternal cervix, "Other", brain plane "Other") are skipped and counted in the
report. No anatomy is labelled: the label map says "not labelled" everywhere on the scan
(the letterbox bands of non-square originals are background). Subject = ``Patient_num``.
The CSV's own ``Train`` column is not used: our split is by patient (``split.py``).
"""

from __future__ import annotations

from pathlib import Path

from fetalflex.data.importers.common import csv_rows, read_scan, unlabelled_map
from fetalflex.data.importers.errors import DataImportError
from fetalflex.data.importers.split import DEFAULT_VAL_FRACTION, subject_split
from fetalflex.data.importers.squaring import square_image
from fetalflex.data.importers.writer import ImportWriter

CSV_NAME = "FETAL_PLANES_DB_data.csv"
COLUMNS = ("Image_name", "Patient_num", "Plane", "Brain_plane")
SOURCE = "FETAL_PLANES_DB"
CREDIT = ("FETAL_PLANES_DB: X. P. Burgos-Artizzu et al., Scientific Reports 10, 10200, 2020; "
          "doi 10.5281/zenodo.3904280; CC BY 4.0")
PLANES = {"Fetal abdomen": "AC", "Fetal femur": "FL", "Fetal thorax": "4CH"}
BRAIN_PLANES = {"Trans-thalamic": "TT", "Trans-ventricular": "TV", "Trans-cerebellum": "TC"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def plane_of(plane: str, brain_plane: str) -> str | None:
    """Our plane code of a row, or None for a plane we do not serve."""
    if plane == "Fetal brain":
        return BRAIN_PLANES.get(brain_plane)
    return PLANES.get(plane)


def _image_path(img_dir: Path, name: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        p = img_dir / f"{name}{suffix}"
        if p.is_file():
            return p
    return None


def import_fpdb(root: Path, out: Path, size: int, val_fraction: float = DEFAULT_VAL_FRACTION,
                overwrite: bool = False, limit: int | None = None,
                sector: bool = True) -> Path:
    csv_path = root / CSV_NAME
    img_dir = root / "Images"
    with ImportWriter(out, SOURCE, CREDIT, overwrite, sector) as w:
        for n, (line, row) in enumerate(csv_rows(csv_path, COLUMNS, delimiter=";")):
            if limit is not None and n >= limit:
                break
            name, patient = row["Image_name"], row["Patient_num"]
            if not name or "/" in name or "\\" in name:
                raise DataImportError(csv_path, f"Image_name: {name!r} is not a file name", line)
            if not patient:
                raise DataImportError(csv_path, "Patient_num: empty (every scan needs its "
                                      "patient, for the split by patient)", line)
            code = plane_of(row["Plane"], row["Brain_plane"])
            if code is None:
                w.skip(f"plane not served: {row['Plane']} / {row['Brain_plane']}")
                continue
            path = _image_path(img_dir, name)
            if path is None:
                raise DataImportError(csv_path, f"image file not found: {img_dir / name}"
                                      f"{{{','.join(IMAGE_SUFFIXES)}}}", line)
            scan = read_scan(path, csv_path, line)
            image, sq = square_image(scan, size)
            w.add(f"fpdb_{name}", image, unlabelled_map(sq, size), plane=code,
                  appearance="real", subject=f"patient{patient}",
                  split=subject_split(SOURCE, patient, val_fraction))
        w.notes["squaring"] = "letterbox (aspect kept), images area-resampled, labels nearest"
        w.notes["size"] = size
        w.notes["val_fraction"] = val_fraction
    return out
