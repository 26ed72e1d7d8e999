"""``fetalflex dataset run`` on the tiny model: the data set loads with the project's loader,
items reproduce byte for byte, a killed run resumes to the same bytes, shards merge to the
same bytes, a rerun changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fetalflex.cli import main
from fetalflex.io.png import read_gray, read_text_chunks
from tests.dataset.conftest import IMAGES, ITEMS, ROOT_ENV, files_of, tiny_args


def _run(spec: Path, out: Path, weights: Path, *extra: str) -> int:
    return main(["dataset", "run", str(spec), "--out", str(out), *tiny_args(weights), *extra])


def test_manifest_loads_with_the_project_loader(full_run: Path) -> None:
    from fetalflex.data.dataset import PhantomDataset
    from fetalflex.data.manifest import read_manifest

    recs = read_manifest(full_run / "manifest.jsonl")  # checks every file, size and label id
    assert len(recs) == IMAGES
    assert [r.image for r in recs][:3] == ["images/tv-normal-00000.png",
                                           "images/tv-normal-00001.png",
                                           "images/tv-hydrocephalus-00000.png"]
    assert {r.preset for r in recs} == {None, "hydrocephalus", "edit:big_stomach",
                                        "short_femur"}
    ds = PhantomDataset(full_run / "manifest.jsonl", include_abnormal=True)
    assert len(ds) == IMAGES
    normal_only = PhantomDataset(full_run / "manifest.jsonl")  # what training reads
    assert len(normal_only) == 5  # 3 normal items + the normal image of 2 of the 3 pairs
    x = ds[0]
    assert x["image"].shape == (1, 32, 32) and x["layout"].shape[1:] == (32, 32)
    pairs = [json.loads(line) for line in (full_run / "pairs.jsonl").read_text().splitlines()]
    assert [p["id"] for p in pairs] == ["tv-hydrocephalus-00000", "ac-edit-big_stomach-00000"]
    for p in pairs:
        region = read_gray(full_run / p["region"])
        assert set(np.unique(region).tolist()) <= {0, 255} and (region > 0).sum() == \
            p["region_pixels"] > 0
        twin, img = read_gray(full_run / p["twin"]), read_gray(full_run / p["image"])
        assert np.array_equal(twin[region == 0], img[region == 0])  # repainted inside only


def test_an_item_reproduces_byte_for_byte(full_run: Path, tiny_weights: Path,
                                          tmp_path: Path) -> None:
    rec = full_run / "records" / "tv-hydrocephalus-00000.json"
    assert main(["reproduce", str(rec), "--out", str(tmp_path), "--weights",
                 str(tiny_weights), "--backend", "torch"]) == 0
    same = {"tv_000.png": "images/tv-hydrocephalus-00000.png",
            "tv_000_abnormal.png": "images/tv-hydrocephalus-00000_twin.png",
            "tv_000_labels.png": "labels/tv-hydrocephalus-00000.png",
            "tv_000_abnormal_labels.png": "labels/tv-hydrocephalus-00000_twin.png",
            "tv_000_region.png": "regions/tv-hydrocephalus-00000.png"}
    for mine, theirs in same.items():
        assert (tmp_path / mine).read_bytes() == (full_run / theirs).read_bytes(), mine


def test_summary_contact_sheet_and_synthetic_marks(full_run: Path, tiny_weights: Path) -> None:
    from fetalflex.backends.onnx_model import weights_hash

    s = json.loads((full_run / "summary.json").read_text())
    assert s["synthetic"] is True and s["model"]["sha256"] == weights_hash(tiny_weights)
    assert s["counts"]["items"] == ITEMS and s["counts"]["images"] == IMAGES
    assert s["counts"]["by_plane"]["TV"] == {"normal": 2, "hydrocephalus": 1}
    assert s["timings"]["completing_run"]["items_made"] == ITEMS
    sheet = read_text_chunks(full_run / "contact_sheet.png")
    assert "SYNTHETIC" in sheet["Description"] and "generated" in sheet["Description"]
    assert read_text_chunks(full_run / "images" / "tv-normal-00000.png")["Synthetic"] == "true"
    rec = json.loads((full_run / "records" / "tv-normal-00000.json").read_text())
    assert rec["synthetic"] is True and rec["request"]["seed"] == rec["item"]["seed"]


def test_dicom_and_npy_hold_the_same_pixels(full_run: Path) -> None:
    import pydicom

    img = read_gray(full_run / "images" / "ac-edit-big_stomach-00000.png")
    twin = read_gray(full_run / "images" / "ac-edit-big_stomach-00000_twin.png")
    a = pydicom.dcmread(full_run / "dicom" / "ac-edit-big_stomach-00000.dcm")
    b = pydicom.dcmread(full_run / "dicom" / "ac-edit-big_stomach-00000_twin.dcm")
    assert np.array_equal(a.pixel_array, img) and np.array_equal(b.pixel_array, twin)
    assert a.ConversionType == "SYN" and a.StudyInstanceUID == b.StudyInstanceUID
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert "stomach" in b.DerivationDescription
    assert np.array_equal(np.load(full_run / "npy" / "ac-edit-big_stomach-00000.npy"), img)
    other = pydicom.dcmread(full_run / "dicom" / "tv-normal-00000.dcm")
    assert other.PatientID != a.PatientID and other.StudyInstanceUID != a.StudyInstanceUID


def test_rerun_changes_nothing_and_another_spec_is_refused(
        full_run: Path, spec_file: Path, tiny_weights: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    before = files_of(full_run, skip_timings=False)
    assert _run(spec_file, full_run, tiny_weights) == 0
    assert "made 0 item(s)" in capsys.readouterr().out
    assert files_of(full_run, skip_timings=False) == before
    other = tmp_path / "other.yaml"
    other.write_text(spec_file.read_text().replace("seed: 5", "seed: 6"))
    assert _run(other, full_run, tiny_weights) == 2
    assert "holds a data set of another spec" in capsys.readouterr().err


def test_killed_run_resumes_to_the_same_bytes(full_run: Path, spec_file: Path,
                                              tiny_weights: Path, tmp_path: Path) -> None:
    """A real process is killed (SIGKILL) mid-run; the rerun completes the set, and the
    directory equals the uninterrupted run's byte for byte (summary timings aside)."""
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "fetalflex.cli", "dataset", "run", str(spec_file), "--out",
           str(out), *tiny_args(tiny_weights)]
    proc = subprocess.Popen(cmd, env=ROOT_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    records = out / "records"
    while proc.poll() is None and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    made = len(list(records.glob("*.json")))
    assert 2 <= made < ITEMS and not (out / "manifest.jsonl").exists()
    for png in out.rglob("*.png"):  # whatever is visible is whole (temporaries start with .)
        if not png.name.startswith("."):
            read_gray(png)
    assert _run(spec_file, out, tiny_weights) == 0
    assert files_of(out) == files_of(full_run)


def test_shards_union_equals_a_single_run(full_run: Path, spec_file: Path,
                                          tiny_weights: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    a, b, merged = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    assert _run(spec_file, a, tiny_weights, "--shard", "0/2") == 0
    assert "3 item(s) still missing" in capsys.readouterr().out
    assert not (a / "manifest.jsonl").exists()
    shared = tmp_path / "shared"
    shutil.copytree(a, shared)
    assert _run(spec_file, b, tiny_weights, "--shard", "1/2") == 0
    ids_a = {p.name for p in (a / "records").iterdir()}
    ids_b = {p.name for p in (b / "records").iterdir()}
    assert not ids_a & ids_b and len(ids_a | ids_b) == ITEMS
    # Separate directories (one per machine): merged into one data set.
    assert main(["dataset", "merge", "--out", str(merged), str(a), str(b)]) == 0
    assert files_of(merged) == files_of(full_run)
    # One shared directory: the last shard to finish assembles the data set.
    assert main(["dataset", "merge", "--out", str(shared)]) == 2  # shard 1 not made yet
    assert "3 item(s) are in no shard yet" in capsys.readouterr().err
    assert _run(spec_file, shared, tiny_weights, "--shard", "1/2") == 0
    assert files_of(shared) == files_of(full_run)
