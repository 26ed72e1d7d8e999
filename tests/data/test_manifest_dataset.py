from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fetalflex.data.dataset import PhantomDataset
from fetalflex.data.manifest import ManifestError, read_manifest
from fetalflex.data.phantom_set import write_phantom_set
from fetalflex.io.png import read_label_map, read_text_chunks, write_label_map


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    write_phantom_set(out, 14, size=64, seed=3, abnormal_fraction=0.3, workers=1)
    return out


def test_phantom_set_is_complete_and_deterministic(phantom_dir: Path,
                                                   tmp_path: Path) -> None:
    recs = read_manifest(phantom_dir / "manifest.jsonl")
    assert len(recs) == 14
    assert {r.plane for r in recs} == {"TV", "TT", "TC", "AC", "4CH", "FL", "LIP"}
    assert any(r.abnormal for r in recs) and any(not r.abnormal for r in recs)
    again = tmp_path / "again"
    write_phantom_set(again, 14, size=64, seed=3, abnormal_fraction=0.3, workers=2)
    assert (again / "manifest.jsonl").read_text() == (phantom_dir / "manifest.jsonl").read_text()
    a = (phantom_dir / recs[5].image).read_bytes()
    assert a == (again / recs[5].image).read_bytes()


def test_images_say_they_are_synthetic(phantom_dir: Path) -> None:
    rec = read_manifest(phantom_dir / "manifest.jsonl")[0]
    text = read_text_chunks(phantom_dir / rec.image)
    assert text["Synthetic"] == "true"
    assert "Not for clinical or diagnostic use" in text["Description"]


def test_dataset_items(phantom_dir: Path) -> None:
    ds = PhantomDataset(phantom_dir / "manifest.jsonl")
    assert all(not r.abnormal for r in ds.records)
    item = ds[0]
    assert item["image"].shape == (1, 64, 64)
    assert float(item["image"].min()) >= -1.0 and float(item["image"].max()) <= 1.0
    assert item["layout"].shape == (35, 64, 64)
    assert int(item["plane"]) in range(7)


def _copy_manifest(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    lines = [json.loads(x) for x in (src / "manifest.jsonl").read_text().splitlines()]
    for i, obj in enumerate(lines):
        obj["image"] = str(src / obj["image"])
        obj["label_map"] = str(src / obj["label_map"])
        edit(i, obj)
    p = dst / "manifest.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in lines) + "\n")
    return p


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda i, o: o.update(plane="XY") if i == 2 else None,
     r"manifest.jsonl:3: plane: plane: 'XY' is unknown"),
    (lambda i, o: o.update(image="/nonexistent/x.png") if i == 1 else None,
     r"manifest.jsonl:2: image: file not found"),
    (lambda i, o: o.pop("label_map") if i == 0 else None,
     r"manifest.jsonl:1: label_map: required"),
    (lambda i, o: o.update(ga_weeks=80) if i == 4 else None,
     r"manifest.jsonl:5: ga_weeks: must be <= 45(\.0)?, got 80"),
    (lambda i, o: o.update(colour="red") if i == 0 else None,
     r"manifest.jsonl:1: colour: unknown key"),
])
def test_manifest_validation_names_line_and_field(phantom_dir: Path, tmp_path: Path,
                                                  mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    p = _copy_manifest(phantom_dir, tmp_path, mutate)
    with pytest.raises(ManifestError, match=message):
        read_manifest(p)


def test_manifest_rejects_size_mismatch_and_unknown_ids(phantom_dir: Path,
                                                        tmp_path: Path) -> None:
    recs = read_manifest(phantom_dir / "manifest.jsonl")
    lab = read_label_map(phantom_dir / recs[0].label_map)
    small = tmp_path / "small.png"
    write_label_map(small, lab[:32, :32].copy())
    p = _copy_manifest(phantom_dir, tmp_path,
                       lambda i, o: o.update(label_map=str(small)) if i == 0 else None)
    with pytest.raises(ManifestError, match=r":1: label_map: size 32x32 does not match image "
                                            r"size 64x64"):
        read_manifest(p)
    bad = lab.copy()
    bad[10, 10] = 200
    badp = tmp_path / "bad.png"
    write_label_map(badp, bad)
    p = _copy_manifest(phantom_dir, tmp_path,
                       lambda i, o: o.update(label_map=str(badp)) if i == 0 else None)
    with pytest.raises(ManifestError, match=r":1: label_map: unknown label ids \[200\]"):
        read_manifest(p)
    (tmp_path / "junk.jsonl").write_text('{"image": "a.png"\n')
    with pytest.raises(ManifestError, match="junk.jsonl:1: not valid JSON"):
        read_manifest(tmp_path / "junk.jsonl")


def test_label_map_png_round_trip(tmp_path: Path) -> None:
    lab = np.arange(35, dtype=np.uint8).repeat(2)[None].repeat(4, 0)
    write_label_map(tmp_path / "l.png", lab)
    assert np.array_equal(read_label_map(tmp_path / "l.png"), lab)


def test_preload_is_cached_beside_the_manifest(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    import torch


    data = tmp_path / "copy"
    shutil.copytree(tiny_data.parent, data, ignore=shutil.ignore_patterns(".preload"))
    manifest = data / tiny_data.name
    first = PhantomDataset(manifest, preload=True, box_prob=1.0, seed=1)
    cached = list((data / ".preload").glob("*.npz"))
    assert len(cached) == 1
    second = PhantomDataset(manifest, preload=True, box_prob=1.0, seed=1)
    for i in range(len(first)):
        a, b = first[i], second[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
    # Another option (no boxes) is another cache entry, never a wrong one.
    PhantomDataset(manifest, preload=True, box_prob=0.0)
    assert len(list((data / ".preload").glob("*.npz"))) == 2
    # A label map rewritten under the same manifest (a re-import) is read again.
    import os

    import numpy as np


    rec = first.records[0]
    lab_path = data / rec.label_map
    old = read_label_map(lab_path)
    write_label_map(lab_path, np.zeros_like(old))
    os.utime(lab_path, ns=(lab_path.stat().st_atime_ns, lab_path.stat().st_mtime_ns + 10**9))
    third = PhantomDataset(manifest, preload=True, box_prob=0.0)
    assert third.preloaded is not None and (third.preloaded[0][1] == 0).all()
