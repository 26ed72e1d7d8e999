"""``fetalflex generate`` as a new user meets it: sizes that follow the model (inputs of
another size resampled and said so), output directories that never mix two requests,
inputs checked before the model loads, PNG or DICOM images, files readable by others."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fetalflex.cli import build_parser, main
from fetalflex.io.png import read_gray, read_label_map, read_text_chunks, write_image
from fetalflex.model.config import DenoiserConfig
from fetalflex.weights import DEFAULT_WEIGHTS

DCIODVFY = shutil.which("dciodvfy")


def _generate(tiny_weights: Path, out: Path, *extra: str) -> int:
    return main(["generate", "--steps", "2", "--weights", str(tiny_weights), "--out", str(out),
                 "--quiet", *extra])


def _layout(tmp_path: Path, plane: str, size: int) -> Path:
    labels = tmp_path / f"{plane.lower()}_{size}_labels.png"
    assert main(["layout", "--plane", plane, "--size", str(size), "--seed", "1",
                 "--out", str(tmp_path / f"{plane}_{size}.png"),
                 "--label-map", str(labels)]) == 0
    return labels


def test_size_defaults_follow_the_shipped_model() -> None:
    size = DenoiserConfig.load(DEFAULT_WEIGHTS / "config.json").image_size
    parser = build_parser()
    assert parser.parse_args(["layout", "--plane", "TV", "--out", "x"]).size == size
    assert parser.parse_args(["phantom", "--n", "1", "--out", "x"]).size == size


def test_a_label_map_of_another_size_is_resampled_nearest_and_said(
        tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _layout(tmp_path, "FL", 64)  # the tiny model is 32 x 32
    out = tmp_path / "o"
    assert _generate(tiny_weights, out, "--plane", "fl", "--layout", str(labels)) == 0
    err = capsys.readouterr().err
    assert f"layout: {labels} is 64x64; resampled to the model's 32x32 (nearest)" in err
    side = json.loads((out / "fl.json").read_text())
    assert side["inputs"]["layout"]["resampled"] == {"from": [64, 64], "to": [32, 32],
                                                     "method": "nearest"}
    used = read_label_map(out / side["inputs"]["layout"]["label_map"])
    given = read_label_map(labels)
    assert used.shape == (32, 32) and set(np.unique(used)) <= set(np.unique(given))
    assert read_label_map(out / side["samples"][0]["label_map"]).shape == (32, 32)
    # The sidecar keeps the input at the model's size: reproduce remakes the same bytes.
    assert main(["reproduce", str(out / "fl.json"), "--out", str(tmp_path / "again"),
                 "--weights", str(tiny_weights)]) == 0
    first = out / side["samples"][0]["image"]
    assert (tmp_path / "again" / first.name).read_bytes() == first.read_bytes()


def test_a_reference_of_another_size_is_resampled_area_and_said(
        tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _layout(tmp_path, "TV", 64)
    ref = tmp_path / "ref.png"
    write_image(ref, (read_label_map(labels) * 20).astype(np.uint8))
    out = tmp_path / "r"
    assert _generate(tiny_weights, out, "--plane", "TV", "--reference", str(ref),
                     "--reference-layout", str(labels), "--preset", "hydrocephalus") == 0
    err = capsys.readouterr().err
    assert f"reference: {ref} is 64x64; resampled to the model's 32x32 (area)" in err
    assert "reference_layout:" in err and "(nearest)" in err
    inputs = json.loads((out / "tv.json").read_text())["inputs"]["reference"]
    assert inputs["resampled"]["method"] == "area"
    assert inputs["layout"]["resampled"]["method"] == "nearest"
    used = read_gray(out / inputs["image"]).astype(float)
    want = read_gray(ref).astype(float).reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.abs(used - want).max() <= 1  # the mean of each 2 x 2 block
    # Provenance: the user's pixels are never stamped wholly synthetic.
    from fetalflex.io.png import read_text_chunks

    side = json.loads((out / "tv.json").read_text())
    assert side["synthetic"] == "partial" and "user-supplied" in side["notice"]
    sample = side["samples"][0]
    assert read_text_chunks(out / inputs["image"])["Synthetic"] == "false"
    assert read_text_chunks(out / sample["image"])["Synthetic"] == "false"
    twin = read_text_chunks(out / sample["abnormal_image"])
    assert twin["Synthetic"] == "partial" and twin["GeneratedRegion"] == sample["region"]
    assert int(twin["GeneratedPixels"]) == sample["region_pixels"] > 0
    assert f"{sample['region_pixels']} of 1024 pixels" in twin["Description"]
    # DICOM would stamp the patient's pixels SYNTHETIC^PHANTOM: refused, saying why
    assert _generate(tiny_weights, tmp_path / "d", "--plane", "TV", "--reference", str(ref),
                     "--reference-layout", str(labels), "--preset", "hydrocephalus",
                     "--format", "dicom") == 2
    assert "format: a repaint of --reference holds your image's pixels" in \
        capsys.readouterr().err


def test_a_reference_and_its_layout_of_different_sizes_are_refused(
        tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _layout(tmp_path, "TV", 64)
    ref = tmp_path / "ref.png"
    write_image(ref, np.zeros((48, 48), np.uint8))
    assert _generate(tiny_weights, tmp_path / "r", "--plane", "TV", "--reference", str(ref),
                     "--reference-layout", str(labels), "--preset", "hydrocephalus") == 2
    err = capsys.readouterr().err
    assert "reference_layout:" in err and "must be the same size" in err


@pytest.mark.parametrize("flags, message", [
    ([], "edits: a repaint of --reference needs a preset or edits: it changes only what "
         "they edit; give --preset or --edit"),
    (["--preset", "hydrocephalus", "--layout", "l.png"],
     "layout: with --reference the anatomy is --reference-layout's"),
])
def test_reference_flags_are_checked_before_the_model_loads(
        flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: an AssertionError traceback from the engine, after loading the model."""
    import fetalflex.generate_cli as gen

    def no_backend(args: object) -> None:
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(gen, "backend_from_args", no_backend)
    code = main(["generate", "--plane", "TV", "--reference", "ref.png", "--reference-layout",
                 "labels.png", "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and f"fetalflex generate: error: {message}" in err
    assert "Traceback" not in err and "AssertionError" not in err


def test_a_non_empty_output_directory_is_refused_unless_overwrite(
        tiny_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert _generate(tiny_weights, out, "--plane", "TV", "--n", "2") == 0
    first = sorted(p.name for p in out.iterdir())
    assert "tv_001.png" in first
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _generate(tiny_weights, out, "--plane", "TV", "--n", "1", "--seed", "5") == 2
    err = capsys.readouterr().err
    assert f"out: {out} is not empty" in err and "--overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == sorted([*first, "notes.txt"])  # untouched
    assert _generate(tiny_weights, out, "--plane", "TV", "--n", "1", "--seed", "5",
                     "--overwrite") == 0
    names = {p.name for p in out.iterdir()}
    side = json.loads((out / "tv.json").read_text())
    assert side["request"]["seed"] == 5 and len(side["samples"]) == 1
    assert "tv_001.png" not in names and "tv_001_labels.png" not in names  # no mixing
    assert "notes.txt" in names  # files no sidecar lists are left alone
    listed = {v for s in side["samples"] for k, v in s.items() if isinstance(v, str)}
    assert listed | {"tv.json", "notes.txt"} == names


def test_dicom_output_is_conformant_and_every_file_is_0644(
        tiny_weights: Path, tmp_path: Path) -> None:
    import pydicom

    out = tmp_path / "d"
    assert _generate(tiny_weights, out, "--plane", "TV", "--preset", "ventriculomegaly",
                     "--pair", "--format", "dicom") == 0
    side = json.loads((out / "tv.json").read_text())
    s = side["samples"][0]
    assert side["image_format"] == "dicom"
    assert s["image"].endswith(".dcm") and s["abnormal_image"].endswith(".dcm")
    src, twin = (pydicom.dcmread(out / s[k]) for k in ("image", "abnormal_image"))
    assert src.ConversionType == "SYN" and src.Rows == 32
    assert (int(src.InstanceNumber), int(twin.InstanceNumber)) == (1, 2)
    assert twin.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert "ventriculomegaly" in twin.DerivationDescription
    if DCIODVFY is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is missing: CI must install the Debian package dicom3tools")
    else:
        for name in (s["image"], s["abnormal_image"]):
            res = subprocess.run([DCIODVFY, str(out / name)], capture_output=True, text=True,
                                 timeout=60)
            bad = [ln for ln in (res.stdout + res.stderr).splitlines()
                   if ln.startswith(("Error", "Warning"))]
            assert not bad, bad
    for p in out.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name


def test_every_png_generate_writes_is_marked_synthetic(tiny_weights: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "p"
    labels = _layout(tmp_path, "AC", 32)
    assert _generate(tiny_weights, out, "--plane", "AC", "--preset", "double_bubble",
                     "--pair", "--layout", str(labels)) == 0
    pngs = sorted(out.glob("*.png"))
    assert any(p.name.endswith("_labels.png") for p in pngs) and len(pngs) == 8
    for p in [*pngs, labels]:
        assert read_text_chunks(p).get("Synthetic") == "true", p.name
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name


def test_the_engine_refuses_a_reference_without_edits_by_field(tiny_weights: Path) -> None:
    """The Python API path (no CLI check before it): was a bare AssertionError."""
    from fetalflex.backends.backends import load_backend
    from fetalflex.errors import InvalidRequestError
    from fetalflex.generation import Engine, GenerationRequest

    eng = Engine(load_backend("torch", tiny_weights))
    normal = eng.run(GenerationRequest(plane="TV", steps=2)).samples[0]
    with pytest.raises(InvalidRequestError, match="^edits: a repaint of the reference needs"):
        eng.run(GenerationRequest(plane="TV", steps=2), reference=normal.image,
                reference_layout=normal.layout)
