"""The local stack of real parts: Triton + orchestrator + Prometheus, on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


def test_stack_smoke(tiny_weights: Path, tmp_path: Path) -> None:
    env = Path(os.environ.get("FETALFLEX_TRITON_ENV", ROOT / ".venv-triton"))
    if not (env / "bin").exists():
        if os.environ.get("CI"):
            pytest.fail(f"Triton environment {env} missing")
        pytest.skip(f"no Triton environment at {env}")
    stack = Stack(tiny_weights, env, workdir=tmp_path)
    try:
        stack.up()
        answers = stack.smoke(n=4, steps=5)
    finally:
        stack.down()
    lat = next(v for k, v in answers.items() if k.startswith("histogram_quantile"))
    count = next(v for k, v in answers.items() if k.startswith("sum(nv_inference_count"))
    assert 0 < lat < 60
    assert count >= 4 * 5 * 2
    assert any(m == "Generate" and r > 0 for m, r in
               answers["fetalflex:request_rate:5m (recording rule)"])
