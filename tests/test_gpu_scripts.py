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


def test_train_run_script_brings_weights_home_in_parts(tmp_path: Path) -> None:
    """scripts/gpu/train_and_bench.sh on the CPU: phantoms, a budgeted training run, and the
    run folder packed into parts under 16 MiB that rejoin into loadable weights."""
    import json
    import tarfile

    from fetalflex.model.denoiser import FetalFlexDenoiser
    from tests.conftest import TINY_MODEL

    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps({
        "model": TINY_MODEL, "base": {"steps": 30, "warmup_steps": 2},
        "prealign": {"steps": 6, "lr": 1e-3, "warmup_steps": 1},
        "control": {"steps": 60, "warmup_steps": 2}, "batch_size": 4, "log_every": 2,
        "checkpoint_every": 20, "box_prob": 0.3, "batching": "resident"}))
    out, work = tmp_path / "out", tmp_path / "work"
    # the budget's clock ticks per reading (fetalflex/training/clock.py): no wall-clock race
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "SIZE": "32", "BENCH": "0",
           "FETALFLEX_CLOCK_TICK": "0.001",
           "WHEELS": str(tmp_path / "none"), "SITE": str(tmp_path / "site"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["bash", str(ROOT / "scripts/gpu/train_and_bench.sh"), "0.75", "40",
                          str(cfg)], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    parts = sorted(out.glob("run.tar.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    joined = tmp_path / "run.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    home = tmp_path / "home"
    with tarfile.open(joined) as t:
        t.extractall(home, filter="data")
    budget = json.loads((home / "run" / "budget.json").read_text())
    assert set(budget["steps"]) == {"base", "prealign", "control"}
    model = FetalFlexDenoiser.load(home / "run" / "final")
    assert model.config.image_size == 32
    assert "train rc 0" in (out / "log.txt").read_text()
