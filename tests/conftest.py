"""Shared test settings and fixtures: offline, deterministic, CPU only, tiny models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))

TINY_MODEL = {"image_size": 32, "block_out_channels": [8, 16],
              "attention_levels": [False, False], "norm_num_groups": 4,
              "cond_embedding_channels": 8}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fetalflex.data.phantom_set import write_phantom_set

    out = tmp_path_factory.mktemp("tiny_data")
    return write_phantom_set(out, 21, size=32, seed=4, abnormal_fraction=0.0, workers=1)


@pytest.fixture(scope="session")
def tiny_eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fetalflex.data.phantom_set import write_phantom_set

    out = tmp_path_factory.mktemp("tiny_eval")
    return write_phantom_set(out, 14, size=32, seed=8, abnormal_fraction=0.5, workers=1)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random denoiser whose anatomy branch is switched on (non-zero outputs)."""
    from fetalflex.model.config import DenoiserConfig
    from fetalflex.model.denoiser import FetalFlexDenoiser

    torch.manual_seed(3)
    m = FetalFlexDenoiser(DenoiserConfig(**TINY_MODEL))
    with torch.no_grad():
        for p in m.control.controlnet_down_blocks.parameters():
            p.normal_(0, 0.05)
    out = tmp_path_factory.mktemp("tiny_weights") / "denoiser"
    m.save(out)
    return out


ROOT = Path(__file__).resolve().parents[1]


def triton_env_path() -> Path:
    """The nvidia-pytriton venv (real tritonserver, CPU); CI must have it, others skip."""
    env = Path(os.environ.get("FETALFLEX_TRITON_ENV", ROOT / ".venv-triton"))
    if not (env / "bin").exists():
        if os.environ.get("CI"):
            pytest.fail(f"the Triton test environment {env} is missing (make triton-env)")
        pytest.skip(f"no Triton environment at {env} (make triton-env)")
    return env


# Modules whose tests start servers or processes, train, export or evaluate: `make test`
# (CI) runs them, `make test-fast` (-m "not slow") leaves them out.
SLOW_MODULES = (
    "tests/backends/test_triton_backend.py", "tests/bench/", "tests/deploy/",
    "tests/evaluation/", "tests/export/", "tests/model/test_training.py",
    "tests/model/test_training_fast_path.py", "tests/service/test_process.py",
    "tests/service/test_auth_and_health_port.py", "tests/service/test_fuzz.py",
    "tests/dataset/test_service.py", "tests/test_gpu_scripts.py",
    "tests/backends/test_quantize.py", "tests/sampling/test_convergence.py", "tests/distill/",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        if rel.startswith(SLOW_MODULES):
            item.add_marker(pytest.mark.slow)
