"""The Python API: the documented example runs, and sidecars reproduce byte for byte."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest

import fetalflex.api
from fetalflex import FetalFlex
from fetalflex.anatomy.layout import rasterize
from fetalflex.anatomy.templates import sample_template


def test_module_example_runs(tiny_weights: Path, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The docstring's example, run as written (on a tiny model, in a temporary folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetalflex.api, "load_backend",
                        lambda name, w, **k: _load(name, w or tiny_weights, **k))
    res = doctest.testmod(fetalflex.api, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 4 and res.failed == 0
    assert (tmp_path / "out" / "api" / "tv.json").is_file()


def _load(name: str, weights: Path, **kw: object):  # type: ignore[no-untyped-def]
    from fetalflex.backends.backends import load_backend

    return load_backend(name, weights, **kw)  # type: ignore[arg-type]


def test_reproduce_with_a_given_layout_and_case_insensitive_names(
        tiny_weights: Path, tmp_path: Path) -> None:
    ff = FetalFlex.load(tiny_weights, backend="torch")
    layout = rasterize(sample_template("TV", 11), ff.size)
    out = ff.generate(plane="tv", layout=layout, preset="VENTRICULOMEGALY", pair=True, seed=4,
                      steps=2)
    assert out.request.plane == "TV" and out.request.preset == "ventriculomegaly"
    assert np.array_equal(out.layouts[0].label_map, layout.label_map)
    sidecar = out.save(tmp_path / "a")
    again = FetalFlex.load(tiny_weights, backend="torch").reproduce(sidecar)
    assert again.images[0].tobytes() == out.images[0].tobytes()
    assert again.twins[0] is not None and out.twins[0] is not None
    assert again.twins[0].tobytes() == out.twins[0].tobytes()


def test_reproduce_refuses_other_weights(tiny_weights: Path, tmp_path: Path) -> None:
    ff = FetalFlex.load(tiny_weights, backend="torch")
    sidecar = ff.generate(plane="FL", steps=1).save(tmp_path / "b")
    import json

    data = json.loads(sidecar.read_text())
    data["model"]["sha256"] = "0" * 64
    sidecar.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sidecar: made with model 000000000000"):
        ff.reproduce(sidecar)


def test_reproduce_refuses_another_precision(tiny_weights: Path, tmp_path: Path) -> None:
    import json

    ff = FetalFlex.load(tiny_weights, backend="torch")
    out = ff.generate(plane="FL", steps=1)
    assert out.provenance["precision"] == "fp32"
    sidecar = out.save(tmp_path / "p")
    data = json.loads(sidecar.read_text())
    assert data["model"]["precision"] == "fp32"
    data["model"]["precision"] = "int8"
    sidecar.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sidecar: made with precision int8"):
        ff.reproduce(sidecar)


def test_int8_needs_the_embedded_backend(tiny_weights: Path) -> None:
    with pytest.raises(ValueError, match="precision: int8 needs the embedded backend"):
        FetalFlex.load(tiny_weights, backend="torch", precision="int8")


def test_save_refuses_a_non_empty_out_unless_overwrite(tiny_weights: Path,
                                                       tmp_path: Path) -> None:
    """As ``fetalflex generate``: the files of two requests never mix."""
    ff = FetalFlex.load(tiny_weights, backend="torch")
    ff.generate(plane="TV", n=2, steps=1).save(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    again = ff.generate(plane="TV", seed=5, steps=1)
    with pytest.raises(ValueError, match=rf"out: {tmp_path} is not empty .*overwrite=True"):
        again.save(tmp_path)
    assert (tmp_path / "tv_001.png").is_file()  # untouched
    sidecar = again.save(tmp_path, overwrite=True)
    names = {p.name for p in tmp_path.iterdir()}
    assert "tv_001.png" not in names and "notes.txt" in names  # no mixing, others kept
    assert FetalFlex.load(tiny_weights, backend="torch").reproduce(sidecar).images[0] \
        .tobytes() == again.images[0].tobytes()


def test_device_is_checked_and_only_for_the_torch_backend(tiny_weights: Path) -> None:
    from fetalflex.backends.backends import load_backend

    with pytest.raises(ValueError, match="device: cuda needs the torch backend"):
        load_backend("embedded", tiny_weights, device="cuda")
    with pytest.raises(ValueError, match="device: 'tpu' is not one of cpu, cuda"):
        load_backend("torch", tiny_weights, device="tpu")  # type: ignore[arg-type]
    assert load_backend("torch", tiny_weights, device="cpu").device == "cpu"
