"""A small spec covering every kind of item, and one uninterrupted run of it on the tiny
model (the reference the resume, shard and service tests compare against)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

# Every kind of item: normal, preset pairs, an edit-list pair, a preset without a pair
# (FL overrides pairs), a GA range, the optional formats; short schedules keep it fast.
SPEC: dict[str, Any] = {
    "name": "test-set", "seed": 5, "pairs": True, "ga_weeks": [20, 30],
    "generation": {"steps": 1, "repaint": {"steps": 2, "jump_length": 1, "jump_n_sample": 1}},
    "formats": ["dicom", "npy"], "contact_sheet": 4,
    "planes": {
        "tv": {"count": 2, "presets": {"Hydrocephalus": 1}},
        "AC": {"count": 1, "edits": {"big_stomach": {
            "count": 1, "edits": [{"op": "scale", "structures": ["stomach"], "factor": 1.5}]}}},
        "FL": {"presets": {"short_femur": 1}, "pairs": False, "ga_weeks": [24, 24]},
    },
}
ITEMS, IMAGES = 6, 8  # items, and images (pairs count twice)
THREADS = "2"  # the same CPU threads in every run (in-process and in a subprocess)
ROOT = Path(__file__).resolve().parents[2]
# A subprocess imports this tree's fetalflex, offline.
ROOT_ENV = {**os.environ, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                          if p)}


def tiny_args(weights: Path) -> list[str]:
    return ["--backend", "torch", "--weights", str(weights), "--threads", THREADS, "--quiet"]


def files_of(root: Path, skip_timings: bool = True) -> dict[str, bytes]:
    """Every file under ``root`` by relative path; summary.json without its timings."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".preload" not in p.parts:
            data = p.read_bytes()
            if skip_timings and p.name == "summary.json":
                s = json.loads(data)
                s.pop("timings")
                data = json.dumps(s, sort_keys=True).encode()
            out[p.relative_to(root).as_posix()] = data
    return out


@pytest.fixture(scope="session")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import yaml

    p = tmp_path_factory.mktemp("spec") / "spec.yaml"
    p.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    return p


@pytest.fixture(scope="session")
def full_run(spec_file: Path, tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> Path:
    """The data set made in one uninterrupted run."""
    from fetalflex.cli import main

    out = tmp_path_factory.mktemp("full") / "ds"
    assert main(["dataset", "run", str(spec_file), "--out", str(out),
                 *tiny_args(tiny_weights)]) == 0
    return out
