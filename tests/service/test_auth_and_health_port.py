"""The plaintext health-only port, refused-token logging (per peer, rate-limited) and
duplicate authorization headers: a real server on loopback, a real client."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from export.triton_server import free_port
from fetalflex.cli import main
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.server import AuthFailureLog, Server, _peer_host, running_server

TOKEN = "tok-7c1f-secret"
API = "fetalflex.v1.FetalFlex"


def _check(port: int, service: str = "") -> str:
    """What kubelet's grpc probe does: plaintext Check."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.RpcError as exc:
            return f"error {exc.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


@pytest.fixture(scope="module")
def server(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("auth")
    (d / "token").write_text(TOKEN + "\n")
    settings = ServiceSettings(port=0, metrics_port=0, health_port=free_port(),
                               weights=tiny_weights, auth_token_file=d / "token",
                               reflection=True, grace_s=2)
    with running_server(settings, start_timeout_s=60, stop_timeout_s=30) as srv:
        yield srv


def _planes(srv: Server, metadata: list[tuple[str, str]]) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        try:
            pb_grpc.FetalFlexStub(ch).ListPlanes(pb.ListPlanesRequest(), metadata=metadata,
                                                 timeout=10)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_health_port_serves_health_only(server: Server) -> None:
    assert server.health_port and server.health_port != server.port
    assert _check(server.health_port) == "SERVING"
    assert _check(server.health_port, API) == "SERVING"
    assert _check(server.health_port, "no.such.Service") == "error NOT_FOUND"
    with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as ch:
        stub = pb_grpc.FetalFlexStub(ch)
        with pytest.raises(grpc.RpcError) as ei:  # not the API, even with the right token
            stub.ListPlanes(pb.ListPlanesRequest(),
                            metadata=[("authorization", f"Bearer {TOKEN}")], timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        refl = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        with pytest.raises(grpc.RpcError) as ei:  # reflection is on, but not on this port
            next(refl)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # The same answer through the command, as the Dockerfile HEALTHCHECK asks it.
    assert main(["health", "--target", f"127.0.0.1:{server.health_port}",
                 "--service", API]) == 0


def test_duplicate_authorization_headers_are_refused(server: Server) -> None:
    good = ("authorization", f"Bearer {TOKEN}")
    bad = ("authorization", "Bearer nope")
    assert _planes(server, [good]) == grpc.StatusCode.OK
    for md in ([good, good], [bad, good], [good, bad]):
        assert _planes(server, md) == grpc.StatusCode.UNAUTHENTICATED, md
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch, \
            pytest.raises(grpc.RpcError) as ei:  # streaming methods too
        list(pb_grpc.FetalFlexStub(ch).GenerateStream(
            pb.GenerateRequest(plane="TV", steps=2), metadata=[bad, good], timeout=10))
    assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "duplicate" in (ei.value.details() or "")


def test_refused_tokens_are_logged_with_the_peer_rate_limited(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    assert server.auth is not None
    now = [1000.0]
    server.auth.failures = AuthFailureLog(interval_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="fetalflex.service")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("authentication failed")]

    for md in ([], [("authorization", "Bearer wrong-guess-1")],
               [("authorization", "Bearer wrong-guess-2")]):  # new connection each time
        assert _planes(server, md) == grpc.StatusCode.UNAUTHENTICATED
    assert len(lines()) == 1, lines()  # one line per peer per 10 s
    first = lines()[0]
    assert "peer=ipv4:127.0.0.1 " in first and "reason=missing token" in first
    assert "method=/fetalflex.v1.FetalFlex/ListPlanes" in first
    now[0] += 10.5
    assert _planes(server, [("authorization", "Bearer wrong-guess-3"),
                            ("authorization", f"Bearer {TOKEN}")]) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert len(lines()) == 2, lines()
    second = lines()[1]
    assert "reason=duplicate authorization header" in second
    assert "(2 more from this peer suppressed" in second
    assert _planes(server, [("authorization", f"Bearer {TOKEN}")]) == grpc.StatusCode.OK
    assert len(lines()) == 2  # successes are not logged
    text = caplog.text
    assert TOKEN not in text and "wrong-guess" not in text  # no token, right or wrong


def test_auth_failure_log_keys_on_the_address_and_stays_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    assert _peer_host("ipv4:10.1.2.3:50000") == "ipv4:10.1.2.3"
    assert _peer_host("ipv6:[::1]:50000") == "ipv6:[::1]"
    assert _peer_host("unix:/run/x.sock") == "unix:/run/x.sock"
    now = [0.0]
    fl = AuthFailureLog(interval_s=10.0, max_peers=3, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="fetalflex.service")
    assert fl.failed("ipv4:10.0.0.1:1111", "/m", "invalid token")
    assert not fl.failed("ipv4:10.0.0.1:2222", "/m", "invalid token")  # same host, new port
    assert fl.failed("ipv4:10.0.0.2:1111", "/m", "invalid token")  # another peer: own line
    now[0] = 9.9
    assert not fl.failed("ipv4:10.0.0.1:3333", "/m", "invalid token")
    now[0] = 10.0
    assert fl.failed("ipv4:10.0.0.1:3333", "/m", "invalid token")
    assert "(2 more from this peer suppressed" in caplog.records[-1].getMessage()
    for i in range(10):
        fl.failed(f"ipv4:10.9.0.{i}:1", "/m", "missing token")
    assert len(fl._peers) == 3


def test_health_port_says_not_serving_while_draining(tiny_weights: Path) -> None:
    hport = free_port()
    settings = ServiceSettings(port=0, metrics_port=0, health_port=hport,
                               weights=tiny_weights, grace_s=20, max_steps=1000)
    ctx = running_server(settings, start_timeout_s=60, stop_timeout_s=60)
    srv = ctx.__enter__()
    result: dict[str, object] = {}

    def long_call() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
            try:
                r = pb_grpc.FetalFlexStub(ch).Generate(
                    pb.GenerateRequest(plane="TV", steps=1000), timeout=60)
                result["calls"] = r.denoiser_calls
            except grpc.RpcError as exc:
                result["error"] = exc.code().name

    caller = threading.Thread(target=long_call)
    caller.start()
    deadline = time.monotonic() + 20
    while srv.servicer.admission.running == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.servicer.admission.running == 1
    stopper = threading.Thread(target=ctx.__exit__, args=(None, None, None))
    stopper.start()
    seen = set()
    while caller.is_alive():
        seen.add((_check(hport), _check(hport, API)))
        time.sleep(0.05)
    caller.join()
    stopper.join(60)
    assert result.get("calls") == 1000, result  # the drain let it finish
    assert ("NOT_SERVING", "NOT_SERVING") in seen, seen  # readiness failed during the drain
    assert _check(hport).startswith("error UNAVAILABLE")  # and the port is gone after it


def test_settings_and_client_options_are_checked(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError, match="health_port"):
        ServiceSettings(port=50051, health_port=50051)
    with pytest.raises(ValidationError, match="metrics_port and health_port"):
        ServiceSettings(metrics_port=9090, health_port=9090)
    assert ServiceSettings(port=0, metrics_port=0, health_port=0).health_port == 0
    (tmp_path / "c.pem").write_text("x")
    for cmd in (["health"], ["load"], ["client", "planes"]):
        assert main([*cmd, "--target", "127.0.0.1:1", "--cert", str(tmp_path / "c.pem")]) == 2
        assert "--cert/--key: give both" in capsys.readouterr().err
