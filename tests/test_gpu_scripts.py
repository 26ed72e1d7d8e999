"""The GPU runner's CPU path: it installs what .whl holds into a private target and runs the
command with the repository importable (the device machine starts bare)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wheel(dest: Path) -> Path:
    """A minimal valid pure-python wheel of a module that says it was installed."""
    path = dest / "ffprobe_mod-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ffprobe_mod.py", "INSTALLED = True\n")
        z.writestr("ffprobe_mod-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: ffprobe-mod\nVersion: 1.0\n")
        z.writestr("ffprobe_mod-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                   "Tag: py3-none-any\n")
        z.writestr("ffprobe_mod-1.0.dist-info/RECORD", "")
    return path


def test_runner_installs_wheels_and_runs_with_the_repo_importable(tmp_path: Path) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels)
    env = {**os.environ, "WHEELS": str(wheels), "SITE": str(tmp_path / "site"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    code = ("import ffprobe_mod, fetalflex, os; assert ffprobe_mod.INSTALLED; "
            "print(os.environ['HF_HUB_OFFLINE'], fetalflex.__version__)")
    out = subprocess.run(["bash", str(ROOT / "scripts/gpu/run.sh"), "python3", "-c", code],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", __import__("fetalflex").__version__]


def test_runner_passes_the_exit_status(tmp_path: Path) -> None:
    env = {**os.environ, "WHEELS": str(tmp_path / "none"), "SITE": str(tmp_path / "site")}
    out = subprocess.run(["bash", str(ROOT / "scripts/gpu/run.sh"), "bash", "-c", "exit 7"],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 7 and "no wheels" in out.stderr
