"""Small synthetic stand-ins for the public real data sets, in their release layouts.

No image of HC18 or FETAL_PLANES_DB is committed: these fixtures draw speckle "scans" with a
bright elliptical skull and write them (and the CSVs) in the official file layouts, so the
importers meet exactly what they meet on the real downloads.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fetalflex.data.importers.ellipse import Ellipse


def _scan(rng: np.random.Generator, w: int, h: int, e: Ellipse | None) -> np.ndarray:
    img = (rng.gamma(2.0, 25.0, (h, w))).clip(0, 255)
    if e is not None:
        yy, xx = np.mgrid[0:h, 0:w]
        c, s = math.cos(math.radians(e.angle)), math.sin(math.radians(e.angle))
        u = ((xx - e.cx) * c + (yy - e.cy) * s) / e.a
        v = (-(xx - e.cx) * s + (yy - e.cy) * c) / e.b
        r = np.sqrt(u * u + v * v)
        img[(r > 0.9) & (r <= 1.0)] = 230
        img[r <= 0.9] *= 0.6
    return img.astype(np.uint8)


def _outline(w: int, h: int, e: Ellipse) -> np.ndarray:
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    t = np.linspace(0, 2 * math.pi, 720)
    c, s = math.cos(math.radians(e.angle)), math.sin(math.radians(e.angle))
    pts = [(e.cx + e.a * math.cos(a) * c - e.b * math.sin(a) * s,
            e.cy + e.a * math.cos(a) * s + e.b * math.sin(a) * c) for a in t]
    d.line([*pts, pts[0]], fill=255, width=1)
    return np.asarray(im)


def write_hc18(root: Path, n_subjects: int = 6, w: int = 160, h: int = 108,
               seed: int = 0) -> dict[str, Ellipse]:
    """``training_set/`` + CSV; subjects 1..n, subject 2 has a second frame (``002_2HC``).
    Returns each file's true ellipse."""
    rng = np.random.default_rng(seed)
    ts = root / "training_set"
    ts.mkdir(parents=True)
    rows, truth = ["filename,pixel size(mm),head circumference (mm)"], {}
    names = [f"{i:03d}_HC.png" for i in range(1, n_subjects + 1)] + ["002_2HC.png"]
    for k, name in enumerate(names):
        e = Ellipse(cx=w / 2 + rng.uniform(-15, 15), cy=h / 2 + rng.uniform(-8, 8),
                    a=rng.uniform(28, 40), b=rng.uniform(20, 26), angle=rng.uniform(-40, 40))
        px = 1.0 + 0.05 * k  # HC 150-250 mm: GA within the accepted range
        Image.fromarray(_scan(rng, w, h, e)).save(ts / name)
        Image.fromarray(_outline(w, h, e)).save(ts / name.replace(".png", "_Annotation.png"))
        rows.append(f"{name},{px},{e.circumference() * px:.2f}")
        truth[name] = e
    (root / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
    return truth


FPDB_ROWS = [
    ("Patient00001_Plane2_1_of_1", 1, "Fetal abdomen", "Not A Brain"),
    ("Patient00001_Plane3_1_of_2", 1, "Fetal brain", "Trans-thalamic"),
    ("Patient00001_Plane3_2_of_2", 1, "Fetal brain", "Other"),
    ("Patient00002_Plane5_1_of_1", 2, "Fetal femur", "Not A Brain"),
    ("Patient00002_Plane6_1_of_1", 2, "Fetal thorax", "Not A Brain"),
    ("Patient00003_Plane3_1_of_1", 3, "Fetal brain", "Trans-cerebellum"),
    ("Patient00004_Plane3_1_of_1", 4, "Fetal brain", "Trans-ventricular"),
    ("Patient00004_Plane1_1_of_1", 4, "Maternal cervix", "Not A Brain"),
]


def write_fpdb(root: Path, seed: int = 0, png_every: int = 2, copies: int = 1) -> None:
    """``Images/`` (JPEG 64 x 64 like the re-export, every ``png_every``-th a non-square PNG
    like the official release) + the semicolon CSV; ``copies`` > 1 repeats the rows for
    further patients (patient numbers + 10 per copy)."""
    rng = np.random.default_rng(seed)
    (root / "Images").mkdir(parents=True)
    lines = ["Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train"]
    rows = [(name.replace(f"Patient{pat:05d}", f"Patient{pat + 10 * c:05d}"), pat + 10 * c,
             plane, brain) for c in range(copies) for name, pat, plane, brain in FPDB_ROWS]
    for k, (name, pat, plane, brain) in enumerate(rows):
        if k % png_every == 0:
            Image.fromarray(_scan(rng, 96, 64, None)).save(root / "Images" / f"{name}.png")
        else:
            Image.fromarray(_scan(rng, 64, 64, None)).convert("RGB").save(
                root / "Images" / f"{name}.jpg")
        lines.append(f"{name};{pat};{plane};{brain};Op. 1;Voluson E6;1")
    (root / "FETAL_PLANES_DB_data.csv").write_text("\n".join(lines) + "\n")


def imported_manifests(root: Path, n_subjects: int, size: int = 32) -> list[Path]:
    """Both stand-ins written and imported at ``size`` (half the subjects / patients held
    out as validation): the HC18 and FETAL_PLANES_DB manifests, in that order."""
    from fetalflex.data.importers.fpdb import import_fpdb
    from fetalflex.data.importers.hc18 import import_hc18

    write_hc18(root / "hc18", n_subjects=n_subjects)
    write_fpdb(root / "fpdb")
    return [import_hc18(root / "hc18", root / "hc", size=size, val_fraction=0.5)
            / "manifest.jsonl",
            import_fpdb(root / "fpdb", root / "fp", size=size, val_fraction=0.5)
            / "manifest.jsonl"]
