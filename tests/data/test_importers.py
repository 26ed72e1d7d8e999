"""Importers of the public real data sets' layouts and of a user's folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fetalflex.anatomy.structures import BACKGROUND, BY_NAME, UNLABELLED
from fetalflex.data.importers.ellipse import fit_ellipse
from fetalflex.data.importers.errors import DataImportError
from fetalflex.data.importers.folder import import_folder
from fetalflex.data.importers.fpdb import import_fpdb
from fetalflex.data.importers.hc18 import hadlock_ga_weeks, import_hc18
from fetalflex.data.importers.split import subject_split
from fetalflex.data.importers.squaring import Square, square_image, square_label_map
from fetalflex.data.manifest import read_manifest
from fetalflex.io.png import read_label_map, read_text_chunks
from tests.real_fixtures import write_fpdb, write_hc18

SKULL = BY_NAME["skull"].id


def test_ellipse_fit_recovers_a_rotated_ellipse() -> None:
    t = np.linspace(0, 2 * math.pi, 300)
    a, b, ang = 50.0, 30.0, math.radians(25)
    x = 80 + a * np.cos(t) * math.cos(ang) - b * np.sin(t) * math.sin(ang)
    y = 60 + a * np.cos(t) * math.sin(ang) + b * np.sin(t) * math.cos(ang)
    e = fit_ellipse(x, y)
    assert (e.cx, e.cy) == pytest.approx((80, 60), abs=1e-6)
    assert (e.a, e.b, e.angle) == pytest.approx((50, 30, 25), abs=1e-6)
    with pytest.raises(ValueError, match="at least 6"):
        fit_ellipse(x[:4], y[:4])


def test_letterbox_keeps_the_aspect_and_pads_with_background() -> None:
    img = np.full((54, 80), 200, dtype=np.uint8)
    out, sq = square_image(img, 40)
    assert out.shape == (40, 40) and sq.side == 80 and sq.offset == (0, 13)
    assert (out[:6] == 0).all() and (out[-6:] == 0).all() and (out[14:26] == 200).all()
    lab = square_label_map(np.full((54, 80), 3, dtype=np.uint8), 40)
    assert (lab[:6] == BACKGROUND).all() and (lab[14:26] == 3).all()
    assert Square(54, 80).inside(40)[20].all() and not Square(54, 80).inside(40)[0].any()


def test_hadlock_formula() -> None:
    # Hadlock 1984: HC 17.5 cm is about 20 weeks.
    assert hadlock_ga_weeks(175.0) == pytest.approx(20.0, abs=0.1)


def test_subject_split_is_stable_and_keeps_subjects_together() -> None:
    sides = {subject_split("HC18", f"{i:03d}") for i in range(200)}
    assert sides == {"train", "val"}
    assert subject_split("HC18", "007") == subject_split("HC18", "007")
    assert subject_split("x", "a", 0.0) == "train" and subject_split("x", "a", 1.0) == "val"


def test_hc18_import_draws_the_outline_as_a_ring_and_leaves_the_rest_unlabelled(
        tmp_path: Path) -> None:
    truth = write_hc18(tmp_path / "hc18")
    out = import_hc18(tmp_path / "hc18", tmp_path / "out", size=64, val_fraction=0.5)
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 7 and {r.plane for r in recs} == {"TT"}
    assert all(r.appearance == "real" and r.source == "HC18" for r in recs)
    # the two frames of subject 002 sit on one side of the split
    two = [r for r in recs if r.subject == "002"]
    assert len(two) == 2 and len({r.split for r in two}) == 1
    first = recs[0]
    lab = read_label_map(out / first.label_map)
    assert set(np.unique(lab).tolist()) == {BACKGROUND, SKULL, UNLABELLED}
    assert (lab[:8] == BACKGROUND).all()  # letterbox band (160 x 108 -> 26 px of 160)
    # the ring lies on the true outline: its centre is the ellipse's centre
    ys, xs = np.nonzero(lab == SKULL)
    e = truth["001_HC.png"]
    assert xs.mean() == pytest.approx((e.cx + 0.5) * 64 / 160 - 0.5, abs=1.0)
    assert ys.mean() == pytest.approx((e.cy + 0.5 + 26) * 64 / 160 - 0.5, abs=1.0)
    assert first.field_mm == pytest.approx(160 * 1.0)
    assert first.ga_weeks == pytest.approx(hadlock_ga_weeks(first.hc_mm or 0), abs=1e-6)
    # imported scans are real pixels: never stamped synthetic
    assert read_text_chunks(out / first.image)["Synthetic"] == "false"
    rep = json.loads((out / "import_report.json").read_text())
    assert rep["records"] == 7 and rep["outline_vs_csv_hc_worst_relative"] < 0.05


def test_hc18_errors_name_the_file_and_line_and_leave_nothing(tmp_path: Path) -> None:
    root = tmp_path / "hc18"
    write_hc18(root, n_subjects=3)
    (root / "training_set" / "002_HC_Annotation.png").unlink()
    with pytest.raises(DataImportError, match=r"pixel_size_and_HC\.csv:3: image file not "
                                              r"found: .*002_HC_Annotation\.png"):
        import_hc18(root, tmp_path / "out", size=32)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / ".out.importing").exists()
    csv = root / "training_set_pixel_size_and_HC.csv"
    csv.write_text(csv.read_text().replace(",1.0,", ",abc,", 1))
    with pytest.raises(DataImportError, match=r"csv:2: pixel size\(mm\): 'abc' is not a number"):
        import_hc18(root, tmp_path / "out", size=32)


def test_hc18_refuses_an_outline_that_disagrees_with_the_csv(tmp_path: Path) -> None:
    root = tmp_path / "hc18"
    write_hc18(root, n_subjects=2)
    csv = root / "training_set_pixel_size_and_HC.csv"
    lines = csv.read_text().splitlines()
    name, px, _hc = lines[1].split(",")
    lines[1] = f"{name},{px},999.0"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataImportError, match="csv:2: 001_HC.png: the outline's circumference"):
        import_hc18(root, tmp_path / "out", size=32)


def test_fpdb_import_maps_planes_accepts_png_and_jpg_and_skips_others(tmp_path: Path) -> None:
    write_fpdb(tmp_path / "fpdb")
    out = import_fpdb(tmp_path / "fpdb", tmp_path / "out", size=32)
    recs = read_manifest(out / "manifest.jsonl")
    assert [r.plane for r in recs] == ["AC", "TT", "FL", "4CH", "TC", "TV"]
    assert {r.subject for r in recs} == {"patient1", "patient2", "patient3", "patient4"}
    rep = json.loads((out / "import_report.json").read_text())
    assert rep["skipped"] == {"plane not served: Fetal brain / Other": 1,
                              "plane not served: Maternal cervix / Not A Brain": 1}
    # the first row is a 96 x 64 PNG: letterboxed, bands background, the scan unlabelled
    lab = read_label_map(out / recs[0].label_map)
    assert (lab[:5] == BACKGROUND).all() and (lab[12:20] == UNLABELLED).all()
    # a 64 x 64 JPEG fills the square: nothing labelled anywhere
    assert (read_label_map(out / recs[1].label_map) == UNLABELLED).all()


def test_fpdb_missing_image_and_existing_out(tmp_path: Path) -> None:
    write_fpdb(tmp_path / "fpdb")
    next((tmp_path / "fpdb" / "Images").glob("Patient00002_Plane5*")).unlink()
    with pytest.raises(DataImportError, match=r"FETAL_PLANES_DB_data\.csv:5: image file not "
                                              r"found: .*Patient00002_Plane5_1_of_1"):
        import_fpdb(tmp_path / "fpdb", tmp_path / "out", size=32)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep")
    with pytest.raises(ValueError, match="out: .*busy exists and is not empty"):
        import_fpdb(tmp_path / "fpdb", tmp_path / "busy", size=32)
    assert (tmp_path / "busy" / "x").read_text() == "keep"


def test_folder_import_with_and_without_label_maps(tmp_path: Path) -> None:
    d = tmp_path / "mine"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).save(d / "b.png")
    lab = np.full((30, 40), UNLABELLED, dtype=np.uint8)
    lab[10:20, 10:30] = BY_NAME["femur"].id
    Image.fromarray(lab).save(d / "a_labels.png")
    (d / "planes.csv").write_text("image,plane,label_map,subject,pixel_size_mm\n"
                                  "a.png,fl,a_labels.png,s1,0.2\nb.png,AC,,s2,\n")
    out = import_folder(d / "planes.csv", tmp_path / "out", size=32)
    recs = read_manifest(out / "manifest.jsonl")
    assert [r.plane for r in recs] == ["FL", "AC"]
    assert recs[0].field_mm == pytest.approx(40 * 0.2) and recs[1].field_mm is None
    got = read_label_map(out / recs[0].label_map)
    assert BY_NAME["femur"].id in got and (got[:3] == BACKGROUND).all()
    (d / "planes.csv").write_text("image,plane\na.png,XY\n")
    with pytest.raises(DataImportError, match=r"planes\.csv:2: plane: 'XY' is not a plane"):
        import_folder(d / "planes.csv", tmp_path / "out2", size=32)
    bad = lab.copy()
    bad[0, 0] = 200
    Image.fromarray(bad).save(d / "a_labels.png")
    (d / "planes.csv").write_text("image,plane,label_map\na.png,FL,a_labels.png\n")
    with pytest.raises(DataImportError, match=r"a_labels\.png: unknown label ids \[200\]"):
        import_folder(d / "planes.csv", tmp_path / "out3", size=32)


def _fan(size: int = 64) -> np.ndarray:
    """A scan on a black screen: a fan (apex at the top), dark fluid touching its edge,
    ruler ticks and a text blob detached from it."""
    rng = np.random.default_rng(1)
    img = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    fan = (yy > 4) & (np.abs(xx - size / 2) < (yy - 4) * 0.6 + 4) & (yy < size - 3)
    img[fan] = rng.integers(40, 200, int(fan.sum()))
    img[fan & (yy > 30) & (yy < 40) & (xx < size / 2 - 2)] = 3  # fluid at the fan's edge
    img[10:40:6, 1:3] = 220  # ruler ticks
    img[2:4, 50:60] = 255    # text
    return img


def test_the_outside_of_the_sector_becomes_background_and_nothing_else() -> None:
    from fetalflex.data.importers.sector import label_outside_sector, sector_mask

    img = _fan()
    inside = sector_mask(img)
    assert not inside[0, 0] and not inside[62, 1] and not inside[2, 55]  # corners, text
    assert not inside[16, 1]  # the ruler ticks do not widen the sector
    assert inside[35, 12] and inside[35, 28]  # the dark fluid at the edge stays inside
    lm = np.full(img.shape, UNLABELLED, dtype=np.uint8)
    lm[45:50, 30:35] = SKULL
    lm[0:2, :] = BACKGROUND
    out = label_outside_sector(lm, img)
    assert out[0, 0] == BACKGROUND and out[35, 12] == UNLABELLED
    assert (out[45:50, 30:35] == SKULL).all()  # labels are never changed
    # a scan that fills its square: nothing is outside
    full = np.random.default_rng(2).integers(20, 200, (32, 32), dtype=np.uint8)
    assert sector_mask(full).all()


def test_importers_label_the_sector_unless_told_not_to(tmp_path: Path) -> None:
    from fetalflex.data.importers.cli import add_import_parser  # noqa: F401  (flag exists)

    root = tmp_path / "user"
    root.mkdir()
    Image.fromarray(_fan()).save(root / "a.png")
    (root / "scans.csv").write_text("image,plane\na.png,AC\n")
    out = import_folder(root / "scans.csv", tmp_path / "o1", size=64)
    (rec,) = read_manifest(out / "manifest.jsonl")
    lab = read_label_map(out / rec.label_map)
    assert lab[0, 0] == BACKGROUND and lab[35, 12] == UNLABELLED
    assert "outside the imaged sector" in json.loads(
        (out / "import_report.json").read_text())["sector"]
    out = import_folder(root / "scans.csv", tmp_path / "o2", size=64, sector=False)
    (rec,) = read_manifest(out / "manifest.jsonl")
    assert (read_label_map(out / rec.label_map) == UNLABELLED).all()
