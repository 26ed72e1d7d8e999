"""`fetalflex serve` as a real process: TLS/mTLS, the client command, SIGTERM drain, logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from export.triton_server import free_port
from fetalflex.cli import main
from fetalflex.io.png import read_gray
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=test-ca", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
                 str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-out",
                 str(d / f"{name}.pem"), "-extfile", str(ext))
    return d


class Proc:
    def __init__(self, settings: dict[str, object], tmp: Path) -> None:
        self.port = free_port()
        cfg = {"port": self.port, "metrics_port": 0, **settings}
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        self.log = tmp / "serve.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen([sys.executable, "-m", "fetalflex.cli", "serve", "--config",
                                   str(tmp / "cfg.json")], stdout=self.log.open("w"),
                                  stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while "serving on port" not in self.log.read_text():
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(self.log.read_text()[-3000:])
            time.sleep(0.2)

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        return self.p.wait(30)


def test_tls_mtls_and_refusals(pki: Path, tiny_weights: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path / "cache"))
    srv = Proc({"weights": str(tiny_weights), "tls_cert": str(pki / "server.pem"),
                "tls_key": str(pki / "server.key"), "tls_client_ca": str(pki / "ca.pem")},
               tmp_path)
    try:
        target = f"127.0.0.1:{srv.port}"
        ca = (pki / "ca.pem").read_bytes()
        good = grpc.ssl_channel_credentials(ca, (pki / "client.key").read_bytes(),
                                            (pki / "client.pem").read_bytes())
        with grpc.secure_channel(target, good) as ch:
            r = pb_grpc.FetalFlexStub(ch).ListPlanes(pb.ListPlanesRequest(), timeout=10)
            assert len(r.planes) == 7
        with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca)) as ch, \
                pytest.raises(grpc.RpcError) as ei:  # no client certificate: mTLS refuses
            pb_grpc.FetalFlexStub(ch).ListPlanes(pb.ListPlanesRequest(), timeout=10)
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as ch, pytest.raises(grpc.RpcError):
            pb_grpc.FetalFlexStub(ch).ListPlanes(pb.ListPlanesRequest(), timeout=5)
    finally:
        assert srv.stop() == 0


def test_client_command_sigterm_drain_and_clean_logs(tiny_weights: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FETALFLEX_CACHE", str(tmp_path / "cache"))
    token = tmp_path / "token"
    token.write_text("tok-123")
    srv = Proc({"weights": str(tiny_weights), "auth_token_file": str(token),
                "grace_s": 20}, tmp_path)
    target = f"127.0.0.1:{srv.port}"
    assert main(["client", "generate", "--target", target, "--token-file", str(token),
                 "--plane", "TV", "--preset", "ventriculomegaly", "--pair", "--steps", "3",
                 "--format", "dicom", "--out", str(tmp_path / "c")]) == 0
    side = json.loads((tmp_path / "c" / "tv.json").read_text())
    assert side["synthetic"] and (tmp_path / "c" / side["samples"][0]["abnormal_image"]).exists()
    # the client names files as `generate` does (fetalflex/io/naming.py)
    assert side["samples"][0]["label_map"] == "tv_000_labels.png"
    assert side["samples"][0]["region"] == "tv_000_region.png"
    assert side["request"]["appearance"] == "phantom" and side["image_format"] == "dicom"
    assert side["served"]["target"] == target and side["model"]["version"]
    # a served result is reproducible from its output record: same pixels, made locally
    assert main(["client", "generate", "--target", target, "--token-file", str(token),
                 "--plane", "ac", "--seed", "5", "--steps", "3", "--out",
                 str(tmp_path / "png")]) == 0
    assert main(["reproduce", str(tmp_path / "png" / "ac.json"), "--weights",
                 str(tiny_weights), "--out", str(tmp_path / "again")]) == 0
    served = read_gray(tmp_path / "png" / "ac_000.png")
    assert np.array_equal(served, read_gray(tmp_path / "again" / "ac_000.png"))
    # A long generation in flight when SIGTERM arrives still completes.
    result: dict[str, object] = {}

    def long_call() -> None:
        with grpc.insecure_channel(target) as ch:
            try:
                r = pb_grpc.FetalFlexStub(ch).Generate(
                    pb.GenerateRequest(plane="TV", steps=200,
                                       client_request_id="SENTINEL-PATIENT-9f3"),
                    metadata=[("authorization", "Bearer tok-123")], timeout=60)
                result["calls"] = r.denoiser_calls
            except grpc.RpcError as exc:
                result["error"] = exc.code().name

    th = threading.Thread(target=long_call)
    th.start()
    time.sleep(1.0)
    srv.p.send_signal(signal.SIGTERM)
    th.join(60)
    assert result.get("calls") == 200, result
    assert srv.p.wait(30) == 0
    log = srv.log.read_text()
    assert "shutting down" in log
    assert "SENTINEL-PATIENT-9f3" not in log and "tok-123" not in log
