"""``fetalflex serve``: the grpc.aio server with health, reflection, TLS, auth, metrics.

Health (``grpc.health.v1``) says SERVING only once the backend has answered a warm-up
call, and NOT_SERVING as soon as shutdown starts; in-flight generations then get
``grace_s`` to finish. With ``health_port`` set, a second, plaintext server on that port
serves the same health statuses and nothing else (kubelet's ``grpc`` probes speak neither
TLS nor mTLS). Logs never carry request contents, images, identifiers or tokens; refused
tokens are logged with the peer address, rate-limited per peer.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import signal
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from fetalflex.backends.backends import Backend, load_backend
from fetalflex.backends.batching import MicroBatcher
from fetalflex.backends.onnx_model import example_inputs
from fetalflex.generation import Engine
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.config import ServiceSettings
from service.decoding import add_health_to_server
from service.metrics import BATCH_ROWS, DENOISER_CALL_SECONDS, MODEL_INFO, REGISTRY
from service.servicer import FetalFlexServicer, add_to_server

log = logging.getLogger("fetalflex.service")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FetalFlex"].full_name
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def _peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` -> ``ipv4:10.0.0.7``: one client's connections share a key."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        addr, _, port = rest.rpartition(":")
        if addr and port.isdigit():
            return f"{kind}:{addr}"
    return peer


class AuthFailureLog:
    """One WARNING line per peer address per ``interval_s``; the lines left out in between
    are counted and reported on that peer's next line. Never logs the presented token.

    Called on the server's event loop only (no locking). At most ``max_peers`` addresses
    are remembered, the least recently logged forgotten first.
    """

    def __init__(self, interval_s: float = 10.0, max_peers: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.max_peers, self.clock = interval_s, max_peers, clock
        self._peers: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def failed(self, peer: str, method: str, reason: str) -> bool:
        """Record one failure; True when a line was written."""
        host, now = _peer_host(peer), self.clock()
        last = self._peers.get(host)
        if last is not None and now - last[0] < self.interval_s:
            self._peers[host] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        log.warning("authentication failed: peer=%s method=%s reason=%s "
                    "(%d more from this peer suppressed since its last line)",
                    host, method, reason, suppressed)
        self._peers[host] = (now, 0)
        self._peers.move_to_end(host)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return True


class TokenAuth(grpc.aio.ServerInterceptor):
    """Bearer-token check on every RPC except health (probes carry no token).

    Exactly one ``authorization`` header must be present: a repeated header is refused
    (servers and proxies disagree on which copy counts). Refusals are logged with the peer
    address, rate-limited per peer (``AuthFailureLog``).
    """

    def __init__(self, token: str, failures: AuthFailureLog | None = None) -> None:
        self.expected = f"Bearer {token}".encode()
        self.failures = failures or AuthFailureLog()

    def _check(self, details: grpc.HandlerCallDetails) -> str | None:
        """None when the call may proceed, else the reason it may not."""
        got = [v for k, v in (details.invocation_metadata or ()) if k.lower() == "authorization"]
        if not got:
            return "missing token"
        if len(got) > 1:
            return "duplicate authorization header"
        value = got[0] if isinstance(got[0], bytes) else str(got[0]).encode()
        return None if hmac.compare_digest(value, self.expected) else "invalid token"

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        if details.method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        reason = self._check(details)
        if reason is None:
            return await continuation(details)
        method = "".join(c if c.isprintable() else "?" for c in details.method[:200])
        message = ("duplicate authorization header" if reason.startswith("duplicate")
                   else "missing or invalid token")

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.failures.failed(context.peer(), method, reason)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        handler = await continuation(details)
        if handler is not None and handler.response_streaming:
            async def deny_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                self.failures.failed(context.peer(), method, reason)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover

            return grpc.unary_stream_rpc_method_handler(
                deny_stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(
            deny, request_deserializer=handler.request_deserializer if handler else None,
            response_serializer=handler.response_serializer if handler else None)


class _TimedCall:
    """Model call wrapper that records call durations and batch rows."""

    def __init__(self, call: Any, backend: str) -> None:
        self.call, self.backend = call, backend

    def __call__(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = self.call(*args)
        DENOISER_CALL_SECONDS.labels(self.backend).observe(time.perf_counter() - t0)
        BATCH_ROWS.observe(int(args[0].shape[0]))
        return out


def build_engine(settings: ServiceSettings) -> tuple[Engine, dict[str, str], Backend]:
    b = load_backend(settings.backend, settings.weights, threads=settings.threads,
                     triton_url=settings.triton_url, triton_model=settings.triton_model,
                     precision=settings.precision, device=settings.device)
    call: Any = _TimedCall(b.call, b.name)
    # Triton batches on the server; in-process backends merge concurrent calls here.
    if settings.backend != "triton" and settings.batch_across_requests:
        call = MicroBatcher(call, max_batch=settings.max_batch_rows,
                            window_s=settings.batch_window_ms / 1000.0)
    backend = Backend(b.name, b.config, call, b.model_id, b.model_hash, b.precision)
    call(*example_inputs(b.config, 2))  # warm-up: the backend answers before SERVING
    model = {"name": "fetalflex-denoiser", "version": b.model_hash[:12],
             "sha256": b.model_hash, "backend": b.name, "precision": b.precision}
    MODEL_INFO.clear()  # one served model per process: the latest server's labels only
    MODEL_INFO.labels(model["version"], b.name, b.precision).set(1)
    return Engine(backend), model, backend


def _credentials(s: ServiceSettings) -> grpc.ServerCredentials | None:
    if s.tls_cert is None and s.tls_key is None:
        return None
    if s.tls_cert is None or s.tls_key is None:
        raise ValueError("tls_cert/tls_key: give both or neither")
    ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
    return grpc.ssl_server_credentials([(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
                                       root_certificates=ca, require_client_auth=ca is not None)


PORT_SETTINGS = ("port", "health_port", "metrics_port")
# grpc binds with SO_REUSEPORT by default, so a second server on a taken port would share it
# silently (and get half the connections); with it off, the bind fails like any other.
_NO_PORT_SHARING = ("grpc.so_reuseport", 0)


class PortUnavailableError(RuntimeError):
    """A port setting that cannot be bound; the message names the setting."""


def _bind_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None if it can), probed with a plain socket."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"host {host!r} does not resolve ({exc.strerror})"
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use"
            if exc.errno == errno.EACCES:
                return f"port {port} needs privileges this process does not have"
            return f"cannot listen on {host}:{port} ({exc.strerror})"
    return None


def port_error(settings: ServiceSettings, key: str) -> PortUnavailableError:
    port = int(getattr(settings, key))
    why = _bind_problem(settings.host, port) or f"cannot listen on {settings.host}:{port}"
    return PortUnavailableError(f"{key}: {why}")


def check_ports(settings: ServiceSettings) -> None:
    """Every configured port can be bound, checked before the model loads (seconds)."""
    for key in PORT_SETTINGS:
        port = int(getattr(settings, key))
        if port and _bind_problem(settings.host, port):
            raise port_error(settings, key)


class Server:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        check_ports(settings)  # a taken port fails here, not after the warm-up
        self.engine, self.model, self.backend = build_engine(settings)
        interceptors: list[grpc.aio.ServerInterceptor] = []
        self.auth: TokenAuth | None = None
        if settings.auth_token_file is not None:
            token = settings.auth_token_file.read_text().strip()
            if not token:
                raise ValueError("auth_token_file: the file is empty")
            self.auth = TokenAuth(token)
            interceptors.append(self.auth)
        opts = [("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                _NO_PORT_SHARING]
        self.server = grpc.aio.server(interceptors=interceptors, options=opts)
        self.servicer = FetalFlexServicer(self.engine, settings, self.model)
        add_to_server(self.servicer, self.server)  # undecodable: INVALID_ARGUMENT
        self.health = health.aio.HealthServicer()
        add_health_to_server(self.health, self.server)  # undecodable: INVALID_ARGUMENT
        if settings.reflection:
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        addr = f"{settings.host}:{settings.port}"
        creds = _credentials(settings)
        try:
            self.port = (self.server.add_secure_port(addr, creds) if creds
                         else self.server.add_insecure_port(addr))
        except RuntimeError:  # taken since check_ports (grpc's message names no setting)
            raise port_error(settings, "port") from None
        self.metrics_port: int | None = None
        # The plaintext health-only port: the same HealthServicer (so the same statuses),
        # nothing else registered on it, so the API stays behind TLS/mTLS and the token.
        self.health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if settings.health_port:
            self.health_server = grpc.aio.server(options=[
                ("grpc.max_receive_message_length", 4096),
                ("grpc.max_send_message_length", 4096),
                ("grpc.max_concurrent_streams", 16), _NO_PORT_SHARING])
            add_health_to_server(self.health, self.health_server)
            try:
                self.health_port = self.health_server.add_insecure_port(
                    f"{settings.host}:{settings.health_port}")
            except RuntimeError:
                raise port_error(settings, "health_port") from None

    async def start(self) -> None:
        if self.settings.metrics_port:
            from prometheus_client import start_http_server

            try:
                srv, _ = start_http_server(self.settings.metrics_port,
                                           addr=self.settings.host, registry=REGISTRY)
            except OSError:
                raise port_error(self.settings, "metrics_port") from None
            self.metrics_port = int(srv.server_port)
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
            log.info("plaintext health-only port %d (grpc.health.v1 only)", self.health_port)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving on port %d (backend %s, precision %s%s)", self.port,
                 self.backend.name, self.backend.precision,
                 ", tuned for this host" if self.settings.backend == "auto" else "")

    async def stop(self) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.settings.grace_s)
        await self.servicer.drained()  # handlers and workers finished: no cancelled tails
        self.servicer.layout_pool.shutdown(wait=False)
        if self.health_server is not None:  # up (NOT_SERVING) until the drain is over
            await self.health_server.stop(0)
        close = getattr(self.backend.call, "close", None)
        if close is not None:
            close()

    async def run_until_signal(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        log.info("shutting down: draining for up to %.0f s", self.settings.grace_s)
        await self.stop()


@contextmanager
def running_server(settings: ServiceSettings, start_timeout_s: float = 180.0,
                   stop_timeout_s: float = 60.0) -> Iterator[Server]:
    """The real server on its own event-loop thread (benchmarks, tests, embedding in
    another program); stopped (drained) on exit."""
    loop = asyncio.new_event_loop()
    holder: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            holder["s"] = Server(settings)
            loop.run_until_complete(holder["s"].start())
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller thread
            holder["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    if not ready.wait(start_timeout_s):
        raise TimeoutError(f"server: did not start within {start_timeout_s} s")
    if "error" in holder:
        raise RuntimeError(f"server: failed to start: {holder['error']}") from holder["error"]
    srv: Server = holder["s"]
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(stop_timeout_s)
        loop.call_soon_threadsafe(loop.stop)
        th.join(10)


def serve(settings: ServiceSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s "
                                                   "%(message)s")

    async def main() -> None:  # the grpc.aio server must be made inside the running loop
        await Server(settings).run_until_signal()

    asyncio.run(main())
