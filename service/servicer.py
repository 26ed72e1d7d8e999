"""The gRPC servicer: a thin adapter, proto -> domain -> engine -> proto.

The event loop only admits, awaits and streams: request translation (PNG decoding,
layouts, edits), generation, layout extraction and response encoding all run in worker
threads, so a probe or a cheap RPC is answered while hostile requests are being refused.
Client cancellation and deadlines stop generation within one denoiser step; a slot is
released when its worker ends (not when the handler is cancelled), and the worker's outcome
is always retrieved (no "Task exception was never retrieved"). Each RPC ends with one
access-log line: method, status code, duration and, for internal errors, the error id;
never payloads or identifiers.

Requests are decoded by deserializers that never raise (``add_to_server``): bytes that are
not a valid protobuf of the method's request type arrive as an ``Undecodable`` marker, and
the one guard every handler runs under (``_Guard``) answers them INVALID_ARGUMENT like any
other bad input, where grpc would answer UNKNOWN and log a traceback per request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar, cast

import grpc
import numpy as np
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from PIL import Image

from fetalflex.anatomy.vocabulary import vocabulary, vocabulary_json
from fetalflex.errors import InvalidRequestError, SamplingCancelledError
from fetalflex.generation import Done, Engine, GenerationResult, Progress
from fetalflex.io import pixels
from service.admission import Admission
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.errors import CancelledError, DeadlineError, Status, status_for
from service.metrics import IMAGES_TOTAL, REJECTED_TOTAL, REQUEST_SECONDS, STAGE_SECONDS
from service.outputs import png_bytes
from service.translate import Job, render_layout, to_job, to_response

ACCESS_LOG = logging.getLogger("fetalflex.service.access")
SERVICE = pb.DESCRIPTOR.services_by_name["FetalFlex"]
T = TypeVar("T")
Req = TypeVar("Req", bound=Message)


class _Stop:
    """Set by cancellation or a passed deadline; checked between denoiser steps."""

    def __init__(self, deadline: float | None) -> None:
        self.event = threading.Event()
        self.deadline = deadline
        self.reason = "cancelled"

    def __call__(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "deadline"
            return True
        return self.event.is_set()


@dataclass
class _Call:
    """One RPC's outcome: the duration metric, the rejection counter, the access log."""

    method: str
    t0: float = field(default_factory=time.perf_counter)
    code: grpc.StatusCode = grpc.StatusCode.OK
    error_id: str | None = None
    on_finish: Callable[[], None] | None = None

    def failed(self, exc: BaseException) -> Status:
        st = status_for(exc)
        self.code, self.error_id = st.code, st.error_id
        if st.reason != "internal":
            REJECTED_TOTAL.labels(st.reason).inc()
        return st

    def finish(self) -> None:
        seconds = time.perf_counter() - self.t0
        REQUEST_SECONDS.labels(self.method, self.code.name).observe(seconds)
        ACCESS_LOG.info("rpc method=%s code=%s duration_ms=%.1f%s", self.method,
                        self.code.name, seconds * 1000,
                        f" error_id={self.error_id}" if self.error_id else "")
        if self.on_finish is not None:
            self.on_finish()


class Undecodable:
    """A request body that is not a valid protobuf of the method's request type (what the
    tolerant deserializer hands the handler instead of raising)."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def error(self) -> InvalidRequestError:
        return InvalidRequestError("request", f"not a valid {self.type_name} protobuf")


class _Guard(Generic[Req]):
    """The one guard around every handler, unary and streaming: an undecodable request
    is refused, an exception becomes its status (``status_for``), cancellation is
    recorded, and the RPC's record finishes once (metrics and the access-log line).

    ``async with guard as request`` gives the decoded request; ``__aexit__`` never
    swallows an exception (it re-raises, or aborts the RPC with the mapped status)."""

    def __init__(self, call: _Call, request: Req | Undecodable,
                 context: grpc.aio.ServicerContext) -> None:
        self.call, self.request, self.context = call, request, context

    async def _fail(self, exc: Exception) -> NoReturn:
        st = self.call.failed(exc)
        try:
            await self.context.abort(st.code, st.message)  # raises
        finally:
            self.call.finish()

    async def __aenter__(self) -> Req:
        request = self.request
        if isinstance(request, Undecodable):
            await self._fail(request.error())
        return request

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            self.call.code = grpc.StatusCode.CANCELLED
        elif isinstance(exc, Exception):
            await self._fail(exc)
            return
        self.call.finish()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _abandon(fut: asyncio.Future[Any], stop: _Stop | None) -> None:
    """The RPC is gone (cancelled): ask the worker to stop, and retrieve its outcome when
    it comes, so that nothing is logged as never retrieved. Nothing here waits: the
    handler ends at once (grpc and asyncio.run cancel handlers that outlive the server)."""
    if stop is not None:
        stop.event.set()
    fut.add_done_callback(_retrieve)


def _preview(x0: Any, size: int = 32) -> bytes:
    img = pixels.to_uint8(np.asarray(x0[0, 0]))
    small = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return png_bytes(small, {"Content": "low-resolution preview"})


def model_identity(model: dict[str, str]) -> dict[str, str]:
    """The version clients and DICOM files see is the weights' content-hash prefix (the
    weights folder's name says nothing about what was loaded)."""
    sha = model.get("sha256", "")
    return {**model, "version": sha[:12]} if sha else dict(model)


class FetalFlexServicer(pb_grpc.FetalFlexServicer):
    def __init__(self, engine: Engine, settings: ServiceSettings, model: dict[str, str]) -> None:
        self.engine = engine
        self.settings = settings
        self.model = model_identity(model)
        self.size = engine.cfg.image_size
        self.admission = Admission(settings.max_concurrent, settings.max_queued)
        # Layout rendering (extraction is CPU-heavy): its own bounded pool and admission,
        # so it neither waits behind generations nor starves them.
        self.layout_pool = ThreadPoolExecutor(settings.max_concurrent,
                                              thread_name_prefix="fetalflex-layout")
        self._busy: set[asyncio.Future[Any]] = set()  # handler tasks and worker futures
        self.layout_admission = Admission(settings.max_concurrent, settings.max_queued,
                                          "layout renders", gauges=False)

    # ------------------------------------------------------------ plumbing
    def _in_worker(self, fn: Callable[..., T], *args: Any, executor: Executor | None = None,
                   done: Callable[[], None] | None = None) -> asyncio.Future[T]:
        """``fn(*args)`` in a worker thread; ``done`` runs (on the loop) when it ends."""
        fut = asyncio.get_running_loop().run_in_executor(executor,
                                                         functools.partial(fn, *args))
        self._busy.add(fut)
        fut.add_done_callback(self._busy.discard)
        if done is not None:
            fut.add_done_callback(lambda _f: done())
        return fut

    async def _threaded(self, fn: Callable[..., T], *args: Any, stop: _Stop | None = None,
                        executor: Executor | None = None,
                        done: Callable[[], None] | None = None) -> T:
        """Await ``fn(*args)`` run in a worker thread. Cancellation reaches the worker
        through ``stop``; the shield keeps ``done`` (a slot's release) for its real end."""
        fut = self._in_worker(fn, *args, executor=executor, done=done)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            _abandon(fut, stop)
            raise

    def _call(self, method: str) -> _Call:
        """An RPC's record; its handler task counts as busy until the record finishes."""
        task = asyncio.current_task()
        if task is None:
            return _Call(method)
        self._busy.add(task)
        return _Call(method, on_finish=functools.partial(self._busy.discard, task))

    async def drained(self, timeout_s: float = 10.0) -> bool:
        """After the gRPC server's stop: wait until every handler and worker thread has
        ended (call before closing the backend, and before the event loop is torn
        down, which would cancel handlers still unwinding: grpc logs those). True when
        everything ended within ``timeout_s``."""
        current = asyncio.current_task()
        pending = {f for f in self._busy if f is not current}
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=timeout_s)
        for _ in range(3):  # let grpc's per-RPC wrappers observe their handlers' end
            await asyncio.sleep(0)
        return not pending

    def _guard(self, method: str, request: Req | Undecodable,
               context: grpc.aio.ServicerContext) -> _Guard[Req]:
        return _Guard(self._call(method), request, context)

    def _stop_for(self, context: grpc.aio.ServicerContext) -> _Stop:
        remaining = context.time_remaining()
        budget = self.settings.default_deadline_s if remaining is None else remaining
        stop = _Stop(time.monotonic() + budget)
        # grpc-stubs type the callback as a class, not a protocol: no function matches it.
        context.add_done_callback(lambda _ctx: stop.event.set())  # type: ignore[arg-type]
        return stop

    def _run(self, job: Job, stop: _Stop, on_event: Callable[[Progress], None] | None
             ) -> GenerationResult:
        # A batching backend learns how many generations are in flight (no idle window).
        session = getattr(self.engine.backend.call, "session", None)
        with session() if session is not None else nullcontext():
            return self._run_steps(job, stop, on_event)

    def _run_steps(self, job: Job, stop: _Stop, on_event: Callable[[Progress], None] | None
                   ) -> GenerationResult:
        try:
            for ev in self.engine.run_progressive(
                    job.request, layout=job.layout, reference=job.reference,
                    reference_layout=job.reference_layout, should_stop=stop,
                    region=job.region):
                if isinstance(ev, Done):
                    return ev.result
                if on_event is not None:
                    on_event(ev)
        except SamplingCancelledError:
            if stop.reason == "deadline":
                raise DeadlineError("deadline exceeded: generation stopped") from None
            raise CancelledError("cancelled by the client") from None
        except Exception:
            if stop.event.is_set():  # stopped mid-call (e.g. the backend closed at shutdown)
                raise CancelledError("cancelled") from None
            raise
        raise RuntimeError("generation ended without a result")

    def _account(self, job: Job, res: GenerationResult) -> None:
        n = len(res.samples) * (2 if job.request.pair or job.reference is not None else 1)
        IMAGES_TOTAL.labels(job.request.plane).inc(n)
        for k, v in res.timings.items():
            STAGE_SECONDS.labels(k.removesuffix("_s")).observe(v)

    def _progress(self, job: Job, queue: asyncio.Queue[pb.GenerateEvent | None]
                  ) -> Callable[[Progress], None]:
        """The worker's event callback: progress events (and previews) onto ``queue``."""
        loop = asyncio.get_running_loop()

        def on_event(ev: Progress) -> None:
            step = ev.step
            prog = pb.Progress(step=step.calls, phase=ev.phase, stage=step.stage,
                               timestep=step.t)
            if job.preview:
                prog.preview_png = _preview(step.denoised)
            loop.call_soon_threadsafe(queue.put_nowait, pb.GenerateEvent(progress=prog))

        return on_event

    async def _events(self, job: Job, stop: _Stop) -> AsyncGenerator[pb.GenerateEvent, None]:
        """Progress events while the worker runs, then the result event. The slot is
        held until the worker ends."""
        queue: asyncio.Queue[pb.GenerateEvent | None] = asyncio.Queue()
        release = await self.admission.acquire()

        def ended() -> None:
            release()
            queue.put_nowait(None)

        fut = self._in_worker(self._run, job, stop, self._progress(job, queue), done=ended)
        try:
            while (item := await queue.get()) is not None:
                yield item
            res = await fut
        except BaseException:
            _abandon(fut, stop)
            raise
        self._account(job, res)
        yield pb.GenerateEvent(result=await self._threaded(to_response, job, res, self.model))

    # ------------------------------------------------------------ RPCs
    async def Generate(self, request: pb.GenerateRequest | Undecodable,
                       context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        async with self._guard("Generate", request, context) as req:
            job = await self._threaded(to_job, req, self.settings, self.size)  # no model yet
            stop = self._stop_for(context)
            release = await self.admission.acquire()
            res = await self._threaded(self._run, job, stop, None, stop=stop, done=release)
            self._account(job, res)
            return await self._threaded(to_response, job, res, self.model)

    async def GenerateStream(self, request: pb.GenerateRequest | Undecodable,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateEvent]:
        async with self._guard("GenerateStream", request, context) as req:
            job = await self._threaded(to_job, req, self.settings, self.size)
            stop = self._stop_for(context)
            async with aclosing(self._events(job, stop)) as events:
                async for event in events:
                    yield event

    async def ListPlanes(self, request: pb.ListPlanesRequest | Undecodable,
                         context: grpc.aio.ServicerContext) -> pb.ListPlanesResponse:
        async with self._guard("ListPlanes", request, context):
            v = vocabulary()
            return pb.ListPlanesResponse(
                structures=[pb.StructureInfo(id=s["id"], name=s["name"], display=s["display"])
                            for s in v["structures"]],
                planes=[pb.PlaneInfo(code=p["code"], name=p["name"],
                                     description=p["description"], structures=p["structures"],
                                     presets=p["presets"]) for p in v["planes"]],
                presets=[pb.PresetInfo(name=p["name"], meaning=p["meaning"],
                                       planes=p["planes"], changes=p["changes"])
                         for p in v["presets"]],
                vocabulary_json=vocabulary_json())

    async def RenderLayout(self, request: pb.RenderLayoutRequest | Undecodable,
                           context: grpc.aio.ServicerContext) -> pb.RenderLayoutResponse:
        async with self._guard("RenderLayout", request, context) as req:
            release = await self.layout_admission.acquire()
            return await self._threaded(render_layout, req, self.size,
                                        executor=self.layout_pool, done=release)


# ---------------------------------------------------------------- registration

def tolerant_deserializer(message: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    """``message.FromString`` that never raises: bad bytes give an ``Undecodable``."""
    bad = Undecodable(message.DESCRIPTOR.full_name)

    def deserialize(data: bytes) -> Message | Undecodable:
        try:
            return message.FromString(data)
        except Exception:  # noqa: BLE001 - whatever the parser says, the bytes are bad
            return bad

    return deserialize


def tolerant_handlers(service: ServiceDescriptor, implementation: Callable[[str], Any]
                      ) -> dict[str, grpc.RpcMethodHandler]:
    """Handlers for ``service``'s methods (``implementation(name)`` serves each), made from
    the proto's service descriptor as the generated ``add_*_to_server`` makes them, but with
    tolerant deserializers."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for m in service.methods:
        if m.client_streaming:
            raise TypeError(f"{m.name}: client-streaming methods are not supported here")
        request = message_factory.GetMessageClass(m.input_type)
        response = message_factory.GetMessageClass(m.output_type)
        make = (grpc.unary_stream_rpc_method_handler if m.server_streaming
                else grpc.unary_unary_rpc_method_handler)
        handlers[m.name] = make(implementation(m.name),
                                request_deserializer=tolerant_deserializer(request),
                                response_serializer=response.SerializeToString)
    return handlers


def method_handlers(servicer: FetalFlexServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The FetalFlex service's handlers (each runs under the servicer's guard)."""
    return tolerant_handlers(SERVICE, functools.partial(getattr, servicer))


def add_to_server(servicer: FetalFlexServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` (use this, not ``pb_grpc.add_FetalFlexServicer_to_server``:
    an undecodable request then gets INVALID_ARGUMENT, not UNKNOWN and a traceback)."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


def add_health_to_server(health: Any, server: grpc.aio.Server) -> None:
    """Register grpc's standard health servicer (``Check``, ``List``, ``Watch``) with tolerant
    deserializers: bytes that are not a valid request get INVALID_ARGUMENT, not UNKNOWN and
    a traceback (the generated ``add_HealthServicer_to_server`` raises in the parser)."""
    from grpc_health.v1 import health_pb2

    def guarded(name: str) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]:
        method = getattr(health, name)

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Undecodable):
                st = status_for(request.error())
                await context.abort(st.code, st.message)
            return await method(request, context)
        return call

    # The stubs type the generated module's descriptor as upb's class (the same object).
    service = cast(ServiceDescriptor, health_pb2.DESCRIPTOR.services_by_name["Health"])
    handlers = tolerant_handlers(service, guarded)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),))
