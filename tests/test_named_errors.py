"""Errors that name the flag or field and the fix, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fetalflex.anatomy.compose import edits_from_json
from fetalflex.cli import main
from fetalflex.errors import InvalidRequestError


def test_an_unknown_edit_key_is_named_with_the_closest_known_one() -> None:
    with pytest.raises(InvalidRequestError, match=r"^edit\[0\]: unknown key 'factr' in a "
                                                  r"'scale' edit \(did you mean 'factor'\?\)"):
        edits_from_json("edit", ['{"op": "scale", "structures": ["stomach"], "factr": 1.5}'])
    with pytest.raises(InvalidRequestError, match=r"^edit\[0\]\[1\]: unknown key 'zz'"):
        edits_from_json("edit", ['[{"op": "remove", "structure": "stomach"}, '
                                 '{"op": "remove", "structure": "stomach", "zz": 1}]'])


def test_a_missing_input_file_names_its_flag(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", "--plane", "AC", "--layout", str(tmp_path / "nofile.png"),
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--layout: file not found: " in err and "Errno" not in err


def test_the_python_api_raises_the_named_error() -> None:
    from fetalflex.request import GenerationRequest, request_error

    with pytest.raises(Exception) as info:
        GenerationRequest(plane="TV", n=100)
    named = request_error(info.value)  # type: ignore[arg-type]
    assert isinstance(named, InvalidRequestError) and named.field == "n"


def test_a_closed_pipe_is_not_a_traceback() -> None:
    """`fetalflex planes --json | head`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "fetalflex.cli", "planes", "--json"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, check=False)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 0


def test_inputs_and_appearance_are_checked_before_the_model_loads(
        tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each mistake used to cost the model's load (6-8 s) before it was reported."""
    import numpy as np
    from PIL import Image

    import fetalflex.generate_cli as gen

    def no_backend(args: object) -> None:
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(gen, "backend_from_args", no_backend)
    bad = tmp_path / "bad.png"
    Image.fromarray(np.full((32, 32), 30, dtype=np.uint8)).save(bad)  # femur id in a TV map
    rc = main(["generate", "--plane", "TV", "--layout", str(bad), "--out", str(tmp_path / "o"),
               "--backend", "torch", "--weights", str(tiny_weights)])
    assert rc == 2 and "layout: label ids [30] (femur) are not part of plane TV" in \
        capsys.readouterr().err
    rc = main(["generate", "--plane", "TV", "--appearance", "real", "--out",
               str(tmp_path / "o2"), "--backend", "torch", "--weights", str(tiny_weights)])
    assert rc == 2 and "appearance: 'real' is not served by these weights" in \
        capsys.readouterr().err
