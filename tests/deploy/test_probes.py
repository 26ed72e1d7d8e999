"""The shipped deployment comes up: each overlay's rendered settings and probes, and the
Dockerfile's HEALTHCHECK, run against a real ``fetalflex serve`` process exactly as kubelet
and Docker would run them.

What is mapped, and only that: the Secret's files (generated here: a CA, a server
certificate and a client certificate) replace the Secret mount; ports become free loopback
ports (every occurrence of one port maps to the same new port: settings, probes,
HEALTHCHECK); the weights become the tiny test model; the gpu-triton overlay's backend
becomes ``embedded`` (no Triton here: the probe, TLS and settings wiring under test do not
depend on the backend). Everything else is the manifests' and the Dockerfile's own text.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from export.triton_server import free_port
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu-embedded", "gpu-triton")
BIN = Path(sys.executable).parent
API_SERVICE = "fetalflex.v1.FetalFlex"


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered")
    return path


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run([_kubectl(), "kustomize", str(DEPLOY / "overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate (the Secret's tls.crt/tls.key/ca.crt) and a client one."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificates for the TLS part")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=fetalflex-test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    sans = {"server": "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:fetalflex.fetalflex.svc\n"
                      "extendedKeyUsage=serverAuth\n",
            "client": "subjectAltName=DNS:fetalflex-client\nextendedKeyUsage=clientAuth\n"}
    for name, ext in sans.items():
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(ext)
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-out", str(d / f"{name}.crt"), "-extfile", str(d / f"{name}.ext"))
    secret = d / "secret"  # what the Secret fetalflex-tls holds, under its key names
    secret.mkdir()
    shutil.copy(d / "server.crt", secret / "tls.crt")
    shutil.copy(d / "server.key", secret / "tls.key")
    shutil.copy(d / "ca.crt", secret / "ca.crt")
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one ONNX export of the tiny model for all


# ------------------------------------------------------------------ what kubelet and Docker do

def kubelet_grpc_probe(port: int, service: str, timeout_s: float) -> str:
    """A kubelet ``grpc:`` probe: plaintext, no client certificate, grpc.health.v1 Check of
    ``service`` on the pod's port within timeoutSeconds. 'SERVING' is success."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}",
                                   options=[("grpc.primary_user_agent", "kube-probe/1.30")]) \
                as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as exc:
        return f"error {exc.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


def fetalflex(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """The installed ``fetalflex`` command as a separate process."""
    return subprocess.run([str(BIN / "fetalflex"), *args], capture_output=True, text=True,
                          timeout=timeout_s)


class ServeProcess:
    """``fetalflex <args>`` as the container runs it; stopped with SIGTERM (by its PID)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:
            self.p = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], stdout=out,
                                      stderr=subprocess.STDOUT, env=env)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait(10)


def process_env(image_env: dict[str, str], ports: dict[int, int], cache: Path,
                weights: Path, container_env: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the image's ``FETALFLEX_*`` variables, then the
    container's own (``env:``), over this test process's environment without any
    ``FETALFLEX_*`` of its own. Ports are mapped through ``ports`` (new ones added), the
    cache directory is ``cache`` and the weights the tiny test model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FETALFLEX_")}
    for k, v in {**image_env, **(container_env or {})}.items():
        if not k.startswith("FETALFLEX_"):
            continue
        if k.endswith("_PORT") and int(v):
            v = str(ports.setdefault(int(v), free_port()))
        env[k] = v
    env["FETALFLEX_CACHE"] = str(cache)  # the image's (and pod's emptyDir) cache, here
    env["FETALFLEX_WEIGHTS"] = str(weights)  # the image ships the demo weights
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ------------------------------------------------------------------ the Deployment, resolved

@dataclass
class Probe:
    kind: str
    port: int
    service: str
    timeout_s: float
    period_s: float
    failure_threshold: int


@dataclass
class Orchestrator:
    args: list[str]
    config_path: str
    settings: dict[str, Any]
    probes: list[Probe]
    container_ports: dict[int, str]
    env: dict[str, str]
    secret_mounts: dict[str, str]  # mountPath -> Secret name
    network_policy: dict[str, Any] = field(default_factory=dict)


def orchestrator(docs: list[dict[str, Any]]) -> Orchestrator:
    """The orchestrator container, its settings found the way the pod finds them: the
    ``--config`` argument, the volumeMount at that path, its ConfigMap key."""
    dep = next(d for d in docs if d["kind"] == "Deployment"
               and d["metadata"]["name"] == "fetalflex-orchestrator")
    pod = dep["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "orchestrator"]
    args = list(c["args"])
    assert args[0] == "serve" and "--config" in args, args
    config_path = args[args.index("--config") + 1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == config_path)
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    settings = json.loads(cm["data"][mount["subPath"]])
    probes = []
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = c[kind]
        assert "grpc" in p, f"{kind}: expected a kubelet grpc probe"
        probes.append(Probe(kind, int(p["grpc"]["port"]), p["grpc"].get("service", ""),
                            float(p.get("timeoutSeconds", 1)), float(p.get("periodSeconds", 10)),
                            int(p.get("failureThreshold", 3))))
    secrets = {m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
               for m in c["volumeMounts"] if "secret" in volumes[m["name"]]}
    netpol = next(d for d in docs if d["kind"] == "NetworkPolicy"
                  and d["metadata"]["name"] == "fetalflex-orchestrator")
    return Orchestrator(args, config_path, settings, probes,
                        {int(p["containerPort"]): p["name"] for p in c["ports"]},
                        {e["name"]: e["value"] for e in c.get("env", [])}, secrets, netpol)


def _map_secret_paths(settings: dict[str, Any], secret_mounts: dict[str, str],
                      secret_dir: Path) -> dict[str, Any]:
    out = dict(settings)
    for key, value in settings.items():
        if not isinstance(value, str) or not value.startswith("/"):
            continue
        mount = next((m for m in secret_mounts if value.startswith(m.rstrip("/") + "/")), None)
        assert mount is not None, f"settings {key}={value}: not under any mounted Secret"
        local = secret_dir / value[len(mount.rstrip("/")) + 1:]
        assert local.is_file(), f"settings {key}={value}: the Secret has no such key"
        out[key] = str(local)
    return out


def _probe_until_serving(probe: Probe, port: int, srv: ServeProcess, budget_s: float) -> str:
    """kubelet's startup probe (to the local ``port``), repeated faster than its period
    until it succeeds, within its failureThreshold x periodSeconds and ``budget_s``."""
    deadline = time.monotonic() + min(budget_s, probe.period_s * probe.failure_threshold)
    status = ""
    while time.monotonic() < deadline:
        if srv.p.poll() is not None:
            pytest.fail(f"the server exited ({srv.p.returncode}):\n{srv.tail()}")
        status = kubelet_grpc_probe(port, probe.service, probe.timeout_s)
        if status == "SERVING":
            return status
        time.sleep(0.25)
    pytest.fail(f"{probe.kind} never succeeded (last: {status}):\n{srv.tail()}")


# ------------------------------------------------------------------ the Dockerfile, read

def dockerfile_stage(name: str) -> list[str]:
    """The instructions of one stage (continuations joined, comments dropped)."""
    lines, cur = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        cur += raw.rstrip().removesuffix("\\").rstrip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(cur.strip())
            cur = ""
    stage: list[str] = []
    inside = False
    for ln in lines:
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", ln, re.I)
        if m:
            inside = m.group(1) == name
        elif inside:
            stage.append(ln)
    assert stage, f"no stage {name} in the Dockerfile"
    return stage


@dataclass
class Image:
    env: dict[str, str]
    expose: set[int]
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]
    healthcheck_timeout_s: float


def orchestrator_image() -> Image:
    env: dict[str, str] = {}
    expose: set[int] = set()
    entrypoint: list[str] = []
    cmd: list[str] = []
    hc: list[str] = []
    hc_timeout = 30.0  # Docker's default
    for ln in dockerfile_stage("orchestrator"):
        op, _, rest = ln.partition(" ")
        op = op.upper()
        if op == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                env[k] = v
        elif op == "EXPOSE":
            expose |= {int(p.split("/")[0]) for p in rest.split()}
        elif op == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif op == "CMD":
            cmd = json.loads(rest)
        elif op == "HEALTHCHECK":
            opts, _, command = rest.partition(" CMD ")
            hc = json.loads(command)
            m = re.search(r"--timeout=(\d+(?:\.\d+)?)s", opts)
            hc_timeout = float(m.group(1)) if m else hc_timeout
    assert hc, "the orchestrator stage has no HEALTHCHECK CMD [exec form]"
    return Image(env, expose, entrypoint, cmd, hc, hc_timeout)


def _remap_target(argv: list[str], ports: dict[int, int]) -> list[str]:
    """``--target HOST:PORT`` with PORT mapped; the port must be one the server binds."""
    out = list(argv)
    i = out.index("--target") + 1
    host, _, port = out[i].rpartition(":")
    assert int(port) in ports, f"HEALTHCHECK targets port {port}, which the server never binds"
    out[i] = f"{host}:{ports[int(port)]}"
    return out


# The test proves the HEALTHCHECK command, port and answer, not how fast a CLI starts on a
# shared, loaded test machine (tests never depend on machine load): Docker's own --timeout
# is checked to be parsed, and the command gets a generous wall-clock allowance here.
HEALTHCHECK_TEST_ALLOWANCE_S = 120.0


def _run_healthcheck(image: Image, ports: dict[int, int]) -> subprocess.CompletedProcess[str]:
    argv = _remap_target(image.healthcheck, ports)
    assert argv[0] == "fetalflex", argv
    assert 0 < image.healthcheck_timeout_s <= 60, image.healthcheck_timeout_s
    return fetalflex(*argv[1:], timeout_s=max(image.healthcheck_timeout_s,
                                              HEALTHCHECK_TEST_ALLOWANCE_S))


# ------------------------------------------------------------------ the tests

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_probes_pass_and_api_requires_mtls(
        overlay: str, pki: Path, tiny_weights: Path, cache: Path, tmp_path: Path) -> None:
    orch = orchestrator(render(overlay))
    s = orch.settings
    health_port = s.get("health_port", 0)
    # Static wiring: probes go to the plaintext health port, which is declared and allowed.
    assert health_port and health_port != s["port"], "no plaintext health port in settings"
    assert s.get("tls_client_ca"), "the API is expected to require mTLS in this overlay"
    for probe in orch.probes:
        assert probe.port == health_port, (probe.kind, probe.port, health_port)
    assert orch.probes[1].service == API_SERVICE  # readiness: the API service itself
    assert orch.container_ports.get(health_port) and orch.container_ports.get(s["port"])
    open_ports = [p["port"] for rule in orch.network_policy["spec"]["ingress"]
                  if "from" not in rule for p in rule["ports"]]
    assert open_ports == [health_port], "kubelet (from the node) must reach the health port"

    ports = {s[k]: free_port() for k in ("port", "metrics_port", "health_port")}
    local = _map_secret_paths(s, orch.secret_mounts, pki / "secret")
    local.update({k: ports[s[k]] for k in ("port", "metrics_port", "health_port")})
    local["weights"] = str(tiny_weights)
    if local["backend"] == "triton":
        local["backend"] = "embedded"
        local.pop("triton_url", None)
    cfg = tmp_path / "settings.json"
    cfg.write_text(json.dumps(local))
    argv = ["fetalflex", *orch.args]
    argv[argv.index(orch.config_path)] = str(cfg)
    env = process_env(orchestrator_image().env, ports, cache, tiny_weights, orch.env)
    srv = ServeProcess(argv, env, tmp_path / "serve.log")
    api = f"127.0.0.1:{ports[s['port']]}"
    mtls = ["--ca", str(pki / "ca.crt"), "--cert", str(pki / "client.crt"),
            "--key", str(pki / "client.key")]
    try:
        startup, readiness, liveness = orch.probes
        results = {startup.kind: _probe_until_serving(startup, ports[startup.port], srv,
                                                      budget_s=90)}
        for probe in (readiness, liveness):
            results[probe.kind] = kubelet_grpc_probe(ports[probe.port], probe.service,
                                                     probe.timeout_s)
        # The health port serves health and nothing else: the API is not reachable there.
        with grpc.insecure_channel(f"127.0.0.1:{ports[health_port]}") as ch, \
                pytest.raises(grpc.RpcError) as ei:
            pb_grpc.FetalFlexStub(ch).ListPlanes(pb.ListPlanesRequest(), timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # The API port: plaintext refused (what the old probes did), TLS without a client
        # certificate refused, the shipped client with one accepted.
        plain = kubelet_grpc_probe(ports[s["port"]], API_SERVICE, 5.0)
        no_cert = fetalflex("health", "--target", api, "--service", API_SERVICE,
                            "--ca", str(pki / "ca.crt"), "--timeout", "5")
        ok = fetalflex("health", "--target", api, "--service", API_SERVICE, *mtls,
                       "--timeout", "5")
        planes = fetalflex("client", "planes", "--target", api, *mtls, "--timeout", "10")
        load = fetalflex("load", "--target", api, *mtls, "--concurrency", "1",
                         "--requests", "1", "--steps", "2")
        hc = _run_healthcheck(orchestrator_image(), ports)
    finally:
        rc = srv.stop()
    report = {**results, "api plaintext": plain, "health --ca (no cert)": no_cert.stdout.strip(),
              "health --ca --cert --key": ok.stdout.strip(),
              "Dockerfile HEALTHCHECK": hc.stdout.strip()}
    print(f"\n{overlay}: {json.dumps(report)}")
    assert all(results[p.kind] == "SERVING" for p in orch.probes), (results, srv.tail())
    assert plain.startswith("error UNAVAILABLE"), plain
    assert no_cert.returncode == 1 and "UNAVAILABLE" in no_cert.stdout, no_cert
    assert ok.returncode == 0 and ok.stdout.strip() == "SERVING", (ok, srv.tail())
    assert planes.returncode == 0 and planes.stdout.startswith("TV "), planes
    assert load.returncode == 0 and json.loads(load.stdout)["codes"] == {"OK": 1}, load
    assert hc.returncode == 0 and hc.stdout.strip() == "SERVING", hc
    assert rc == 0, srv.tail()


@pytest.fixture()
def image_server(tiny_weights: Path, cache: Path, tmp_path: Path
                 ) -> Iterator[tuple[Image, dict[int, int], ServeProcess]]:
    """The orchestrator image's ENTRYPOINT + CMD with the image's FETALFLEX_* environment."""
    image = orchestrator_image()
    ports: dict[int, int] = {}
    env = process_env(image.env, ports, cache, tiny_weights)
    srv = ServeProcess([*image.entrypoint, *image.cmd], env, tmp_path / "serve.log")
    try:
        yield image, ports, srv
    finally:
        srv.stop()


def test_dockerfile_healthcheck_passes_with_the_image_defaults(
        image_server: tuple[Image, dict[int, int], ServeProcess]) -> None:
    image, ports, srv = image_server
    health_port = int(image.env["FETALFLEX_HEALTH_PORT"])
    assert health_port in image.expose and int(image.env["FETALFLEX_PORT"]) in image.expose
    target = image.healthcheck[image.healthcheck.index("--target") + 1]
    assert target.endswith(f":{health_port}"), "HEALTHCHECK must ask the health port"
    # Docker's start period (60 s): failures before the server is up do not count.
    start = Probe("start-period", health_port, "", image.healthcheck_timeout_s, 1.0, 60)
    _probe_until_serving(start, ports[health_port], srv, budget_s=60)
    hc = _run_healthcheck(image, ports)
    print(f"\nDockerfile HEALTHCHECK {image.healthcheck}: rc={hc.returncode} "
          f"{hc.stdout.strip()}")
    assert hc.returncode == 0 and hc.stdout.strip() == "SERVING", (hc, srv.tail())
    assert srv.stop() == 0, srv.tail()
    down = _run_healthcheck(image, ports)  # and it does fail when the server is gone
    assert down.returncode == 1 and "UNAVAILABLE" in down.stdout, down
