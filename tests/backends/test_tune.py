"""The engine tuner: candidates by host, validation against fp32, the cache, --backend auto."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from fetalflex.backends import tune as tune_mod
from fetalflex.backends.tune import (
    INT8_ADMITTED_ERROR,
    INT8_EVALUATED_ERROR,
    Engine,
    Measured,
    candidates,
    judge,
    thread_counts,
    tune,
    tuned_engine,
)

AVX2: dict[str, Any] = {"cpu": "AMD EPYC", "cpus": 2, "flags": ["avx2"], "bf16_native": False,
                        "gpu": ""}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_thread_counts_double_up_to_the_cpus() -> None:
    assert thread_counts(1) == [1]
    assert thread_counts(2) == [1, 2]
    assert thread_counts(16) == [1, 2, 4, 8, 16]
    assert thread_counts(6) == [1, 2, 4, 6]


def test_bf16_is_tried_only_where_the_cpu_computes_it() -> None:
    plain = candidates(AVX2)
    assert not [e for e in plain if e.precision == "bf16"]
    assert {(e.backend, e.precision, e.threads) for e in plain} >= {
        ("embedded", "fp32", 1), ("embedded", "fp32", 2), ("embedded", "int8", 1),
        ("embedded", "int8", 2), ("torch", "fp32", 2)}
    amx = candidates({**AVX2, "flags": ["amx_bf16"], "bf16_native": True})
    assert Engine("torch", "bf16", 2) in amx
    gpu = candidates({**AVX2, "gpu": "H100"}, precisions=("fp32", "bf16"))
    assert Engine("torch", "bf16", None, "cuda") in gpu
    assert not [e for e in gpu if e.precision == "int8"]


def _row(precision: str, ms: float, err: float, backend: str = "embedded") -> Measured:
    return Measured(Engine(backend, precision, 2), ms, err)  # type: ignore[arg-type]


def test_judge_admits_only_what_matches_the_evaluated_arithmetic() -> None:
    rows = [_row("fp32", 40, 1e-6), _row("fp32", 30, 5e-3, "torch"), _row("int8", 20, 0.02),
            _row("bf16", 10, 0.05, "torch")]
    ok = judge(rows)
    assert [r.engine.precision for r in ok] == ["fp32", "int8"]
    assert "differs from the reference" in rows[1].reason
    assert "further from fp32" in rows[3].reason and "0.05" not in rows[3].reason
    # bf16 closer to fp32 than the int8 graph of the same run: admitted
    rows = [_row("fp32", 40, 1e-6), _row("int8", 20, 0.02), _row("bf16", 10, 0.01, "torch")]
    assert [r.engine.precision for r in judge(rows)] == ["fp32", "int8", "bf16"]
    # without an int8 row, the evaluated int8 level is the bar
    assert judge([_row("bf16", 10, INT8_EVALUATED_ERROR * 1.5, "torch")]) == []
    # a row that failed to run is never eligible
    failed = Measured(Engine("embedded", "int8", 1), reason="failed: RuntimeError: x")
    assert judge([failed]) == []
    # an int8 graph further from fp32 than the evaluated level is refused, however fast
    # (the real-look student's: 0.105), and does not lower bf16's bar to its own
    rows = [_row("fp32", 33, 1e-6), _row("int8", 28, 0.105), _row("bf16", 10, 0.09, "torch")]
    assert [r.engine.precision for r in judge(rows)] == ["fp32"]
    assert "lose quality in int8" in rows[1].reason and "1.0e-01" in rows[1].reason
    assert judge([_row("int8", 20, INT8_ADMITTED_ERROR)]) != []


def test_tune_measures_validates_caches_and_auto_uses_it(
        tiny_weights: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fetalflex.backends.backends import load_backend

    lines: list[str] = []
    report = tune(tiny_weights, calls=2, precisions=("fp32", "bf16"), log=lines.append)
    assert report.choice is not None and report.choice.precision in ("fp32", "bf16")
    fp32 = [r for r in report.rows if r.engine.precision == "fp32"]
    assert fp32 and all(r.validated and r.rel_error is not None and r.rel_error < 1e-3
                        for r in fp32)
    assert all(r.ms is not None and r.ms > 0 for r in fp32)
    files = list((cache / "tune").glob("*.json"))
    assert len(files) == 1 and "chose" in lines[-1]
    assert "(chosen)" in report.table()

    def no_measuring(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached choice was measured again")

    monkeypatch.setattr(tune_mod, "tune", no_measuring)
    assert tuned_engine(tiny_weights) == report.choice
    b = load_backend("auto", tiny_weights)
    assert (b.name, b.precision) == (report.choice.backend, report.choice.precision)


def test_another_host_measures_again(tiny_weights: Path, cache: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tune_mod, "host_facts", lambda: dict(AVX2))
    tune(tiny_weights, calls=1, precisions=("fp32",), log=lambda m: None)
    assert tune_mod.cached_report(tiny_weights) is not None
    monkeypatch.setattr(tune_mod, "host_facts", lambda: {**AVX2, "cpu": "Intel Xeon"})
    assert tune_mod.cached_report(tiny_weights) is None


def test_torch_bf16_is_close_to_fp32(tiny_weights: Path) -> None:
    from fetalflex.backends.backends import load_backend
    from fetalflex.backends.onnx_model import example_inputs

    a = load_backend("torch", tiny_weights)
    b = load_backend("torch", tiny_weights, precision="bf16")
    x = example_inputs(a.config)
    ya, yb = a.call(*x), b.call(*x)
    assert b.precision == "bf16" and yb.dtype == torch.float32
    assert float((ya - yb).norm() / ya.norm()) < 0.05


@pytest.mark.parametrize(("backend", "precision", "fix"), [
    ("torch", "int8", "needs the embedded backend (got torch); pass --backend embedded"),
    ("embedded", "bf16", "needs the torch backend (got embedded); pass --backend torch"),
])
def test_a_precision_names_the_backend_that_runs_it(tiny_weights: Path, backend: str,
                                                    precision: str, fix: str) -> None:
    from fetalflex.backends.backends import load_backend

    with pytest.raises(ValueError, match="^" + re.escape(f"precision: {precision} {fix}")):
        load_backend(backend, tiny_weights, precision=precision)  # type: ignore[arg-type]


def test_a_cached_choice_is_judged_by_todays_rules(
        tiny_weights: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A cache written before a rule tightened (an int8 graph of 0.105 error chosen) is not
    used past that rule: the fastest engine still admitted is, without measuring again."""
    from fetalflex.backends.onnx_model import weights_hash
    from fetalflex.backends.tune import TuneReport, tune_key, tune_path

    monkeypatch.setattr(tune_mod, "host_facts", lambda: dict(AVX2))
    key = tune_key(dict(AVX2), weights_hash(tiny_weights))
    fp32, int8 = Engine("embedded", "fp32", 2), Engine("embedded", "int8", 2)
    old = TuneReport(key, dict(AVX2), "x", 1, 8,
                     rows=[Measured(fp32, 33.4, 0.0, True), Measured(int8, 28.1, 0.105, True)],
                     choice=int8)
    tune_path(key).parent.mkdir(parents=True)
    tune_path(key).write_text(old.to_json())

    def no_measuring(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached measurements were enough")

    monkeypatch.setattr(tune_mod, "tune", no_measuring)
    lines: list[str] = []
    assert tuned_engine(tiny_weights, log=lines.append) == fp32
    assert any("no longer admitted" in m and "lose quality in int8" in m for m in lines)
    # `fetalflex tune --show` prints the cache as today's rules judge it
    from fetalflex.cli import main

    assert main(["tune", "--weights", str(tiny_weights), "--show"]) == 0
    shown = capsys.readouterr().out
    assert "no longer admitted" in shown and "lose quality in int8" in shown
    assert "fp32 x2 threads **(chosen)**" in shown
