"""``fetalflex client`` flags as ``fetalflex generate`` has them: ``--plane`` required for a
generation (not silently TV) and case-insensitive; outputs never mix two requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.triton_server import free_port
from fetalflex.cli import build_parser, main


def test_plane_and_preset_are_case_insensitive() -> None:
    args = build_parser().parse_args(["client", "generate", "--plane", "4ch", "--preset",
                                      "Ventricular_Septal_Defect"])
    assert (args.plane, args.preset) == ("4CH", "ventricular_septal_defect")


@pytest.mark.parametrize("action", ["generate", "stream"])
def test_a_generation_needs_a_plane(action: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before any connection (nothing listens on the target)."""
    code = main(["client", action, "--target", f"127.0.0.1:{free_port()}", "--out",
                 str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"fetalflex client: error: plane: required for `client {action}`" in err
    assert not (tmp_path / "c").exists()


def test_planes_needs_no_plane() -> None:
    assert build_parser().parse_args(["client", "planes"]).plane is None


def test_a_non_empty_output_directory_is_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "tv.json").write_text("{}")
    code = main(["client", "generate", "--plane", "tv", "--target",
                 f"127.0.0.1:{free_port()}", "--out", str(tmp_path / "c")])
    assert code == 2 and "is not empty" in capsys.readouterr().err
