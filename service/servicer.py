"""The gRPC servicer: a thin adapter, proto -> domain -> engine -> proto.

The event loop only admits, awaits and streams: request translation (PNG decoding,
layouts, edits), generation, layout extraction and response encoding all run in worker
threads, so a probe or a cheap RPC is answered while hostile requests are being refused.
Client cancellation and deadlines stop generation within one denoiser step; a slot is
released when its worker ends (not when the handler is cancelled), and the worker's outcome
is always retrieved (no "Task exception was never retrieved"). Each RPC ends with one
access-log line: method, status code, duration and, for internal errors, the error id;
never payloads or identifiers.

What it delegates: request decoding that never raises (``decoding``: bytes that are not a
valid protobuf arrive as an ``Undecodable`` marker), the one guard every handler runs under
and the RPC's record (``guard``), proto <-> domain translation (``translate``), admission
(``admission``), and the work itself to the library (``Engine``, the layout renderer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing, nullcontext
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message
from PIL import Image

from fetalflex.errors import SamplingCancelledError
from fetalflex.generation import Done, Engine, GenerationResult, Progress
from fetalflex.io import pixels
from service.admission import Admission
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.decoding import Undecodable, tolerant_handlers
from service.errors import CancelledError, DeadlineError
from service.guard import CallRecord, Guard, Stop, abandon
from service.metrics import IMAGES_TOTAL, STAGE_SECONDS
from service.outputs import png_bytes
from service.translate import Job, planes_response, render_layout, to_job, to_response

ACCESS_LOG = logging.getLogger("fetalflex.service.access")
SERVICE = pb.DESCRIPTOR.services_by_name["FetalFlex"]
T = TypeVar("T")
Req = TypeVar("Req", bound=Message)


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

    async def _threaded(self, fn: Callable[..., T], *args: Any, stop: Stop | None = None,
                        executor: Executor | None = None,
                        done: Callable[[], None] | None = None) -> T:
        """Await ``fn(*args)`` run in a worker thread. Cancellation reaches the worker
        through ``stop``; the shield keeps ``done`` (a slot's release) for its real end."""
        fut = self._in_worker(fn, *args, executor=executor, done=done)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            abandon(fut, stop)
            raise

    def _call(self, method: str) -> CallRecord:
        """An RPC's record; its handler task counts as busy until the record finishes."""
        task = asyncio.current_task()
        if task is None:
            return CallRecord(method)
        self._busy.add(task)
        return CallRecord(method, on_finish=functools.partial(self._busy.discard, task))

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
               context: grpc.aio.ServicerContext) -> Guard[Req]:
        return Guard(self._call(method), request, context)

    def _stop_for(self, context: grpc.aio.ServicerContext) -> Stop:
        remaining = context.time_remaining()
        budget = self.settings.default_deadline_s if remaining is None else remaining
        stop = Stop(time.monotonic() + budget)
        # grpc-stubs type the callback as a class, not a protocol: no function matches it.
        context.add_done_callback(lambda _ctx: stop.event.set())  # type: ignore[arg-type]
        return stop

    def _run(self, job: Job, stop: Stop, on_event: Callable[[Progress], None] | None
             ) -> GenerationResult:
        # A batching backend learns how many generations are in flight (no idle window).
        session = getattr(self.engine.backend.call, "session", None)
        with session() if session is not None else nullcontext():
            return self._run_steps(job, stop, on_event)

    def _run_steps(self, job: Job, stop: Stop, on_event: Callable[[Progress], None] | None
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

    async def _events(self, job: Job, stop: Stop) -> AsyncGenerator[pb.GenerateEvent, None]:
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
            abandon(fut, stop)
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
            return planes_response()

    async def RenderLayout(self, request: pb.RenderLayoutRequest | Undecodable,
                           context: grpc.aio.ServicerContext) -> pb.RenderLayoutResponse:
        async with self._guard("RenderLayout", request, context) as req:
            release = await self.layout_admission.acquire()
            return await self._threaded(render_layout, req, self.size,
                                        executor=self.layout_pool, done=release)


# ---------------------------------------------------------------- registration

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
