"""``fetalflex serve`` settings: flags > --config file > FETALFLEX_* > defaults; taken ports
fail naming the setting, before the model loads."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetalflex.cli import build_parser, main
from service.config import DEFAULT_METRICS_PORT, SERVE_FLAGS, ServiceSettings
from service.serve_cli import settings_from_args

ROOT = Path(__file__).resolve().parents[2]


def _settings(argv: list[str]) -> ServiceSettings:
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_precedence_flags_over_file_over_env_over_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PORT", "MAX_CONCURRENT", "METRICS_PORT", "BACKEND", "REFLECTION"):
        monkeypatch.delenv(f"FETALFLEX_{key}", raising=False)
    defaults = _settings([])
    assert (defaults.port, defaults.max_concurrent, defaults.metrics_port) == (
        50051, 4, DEFAULT_METRICS_PORT)
    monkeypatch.setenv("FETALFLEX_PORT", "50100")
    monkeypatch.setenv("FETALFLEX_MAX_CONCURRENT", "7")
    monkeypatch.setenv("FETALFLEX_METRICS_PORT", "9500")
    monkeypatch.setenv("FETALFLEX_REFLECTION", "false")
    env = _settings([])
    assert (env.port, env.max_concurrent, env.metrics_port, env.reflection) == (
        50100, 7, 9500, False)
    cfg = tmp_path / "settings.json"
    cfg.write_text(json.dumps({"port": 50200, "max_concurrent": 3}))
    filed = _settings(["--config", str(cfg)])
    assert (filed.port, filed.max_concurrent, filed.metrics_port) == (50200, 3, 9500)
    flagged = _settings(["--config", str(cfg), "--port", "50052", "--metrics-port", "0",
                         "--max-batch-rows", "8", "--backend", "torch", "--reflection"])
    assert (flagged.port, flagged.max_concurrent, flagged.metrics_port) == (50052, 3, 0)
    assert (flagged.max_batch_rows, flagged.backend, flagged.reflection) == (8, "torch", True)


def test_every_flag_is_a_setting_and_help_names_env_and_default(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in SERVE_FLAGS:
        assert name in ServiceSettings.model_fields
        assert f"--{name.replace('_', '-')}" in out and f"env FETALFLEX_{name.upper()}" in out
    assert f"default {DEFAULT_METRICS_PORT}" in out


def test_bad_values_are_field_reason_lines(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_MAX_QUEUED", "-1")
    assert main(["serve", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "fetalflex serve: error: port: must be <= 65535, got 70000" in err
    assert "max_queued: must be >= 0, got -1" in err


def test_metrics_port_is_not_prometheus_own_anywhere() -> None:
    assert DEFAULT_METRICS_PORT != 9090
    docker = (ROOT / "Dockerfile").read_text()
    assert f"FETALFLEX_METRICS_PORT={DEFAULT_METRICS_PORT}" in docker
    assert re.search(rf"EXPOSE .*\b{DEFAULT_METRICS_PORT}\b", docker)
    for path in [*(ROOT / "deploy").rglob("*.yaml"), ROOT / "Dockerfile"]:
        assert "9090" not in path.read_text(), path
    for path in (ROOT / "deploy" / "README.md", ROOT / "service" / "README.md"):
        assert str(DEFAULT_METRICS_PORT) in path.read_text(), path


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by a plain listening socket (as another program would hold it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.mark.parametrize("setting", ["port", "health_port", "metrics_port"])
def test_taken_port_fails_naming_the_setting(setting: str, taken_port: int,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import service.server as server

    def no_model(settings: object) -> None:
        raise AssertionError("the model was loaded before the ports were checked")

    monkeypatch.setattr(server, "build_engine", no_model)
    ports = {"port": "0", "health_port": "0", "metrics_port": "0", setting: str(taken_port)}
    argv = ["serve", *(x for k, v in ports.items() for x in (f"--{k.replace('_', '-')}", v))]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"fetalflex serve: error: {setting}: port {taken_port} is in use" in err
    assert "Traceback" not in err and "OSError" not in err


def test_second_server_cannot_share_the_api_port(tiny_weights: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """grpc binds with SO_REUSEPORT by default; the service turns it off, so a second server
    on a taken API port fails (here past the early check: grpc's own bind)."""
    import asyncio

    import service.server as server

    base = ServiceSettings(port=0, metrics_port=0, weights=tiny_weights, reflection=False)

    async def second(port: int) -> None:  # a grpc.aio server is made inside a running loop
        server.Server(base.model_copy(update={"port": port}))

    with server.running_server(base) as first:
        monkeypatch.setattr(server, "check_ports", lambda settings: None)
        with pytest.raises(server.PortUnavailableError,
                           match=rf"^port: port {first.port} is in use$"):
            asyncio.run(second(first.port))


def test_precision_is_a_serve_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert _settings([]).precision == "fp32"
    assert _settings(["--precision", "int8"]).precision == "int8"
    with pytest.raises(SystemExit):
        _settings(["--precision", "bf8"])
    assert "--precision" in capsys.readouterr().err
