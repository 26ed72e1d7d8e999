"""The gRPC servicer: a thin adapter, proto -> domain -> engine -> proto.

Generations run in worker threads (the sampler is CPU/GPU-bound Python); the event loop
only admits, awaits and streams. Client cancellation and deadlines stop the loop within
one denoiser step and free the slot.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
from PIL import Image

from fetalflex.anatomy.edits import apply_edits
from fetalflex.anatomy.layout import extract, rasterize
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.presets import preset as get_preset
from fetalflex.anatomy.render import colourize
from fetalflex.anatomy.templates import sample_template
from fetalflex.anatomy.vocabulary import vocabulary, vocabulary_json
from fetalflex.generation import Engine, GenerationResult
from service.admission import Admission
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.errors import CancelledError, DeadlineError, InvalidRequestError, status_for
from service.metrics import IMAGES_TOTAL, REJECTED_TOTAL, REQUEST_SECONDS, STAGE_SECONDS
from service.outputs import label_png_bytes, png_bytes
from service.translate import Job, _layout, edits_from, to_job, to_response


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


def _preview(x0: Any, size: int = 32) -> bytes:
    img = ((np.asarray(x0[0, 0]).clip(-1, 1) + 1) * 127.5).astype(np.uint8)
    small = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return png_bytes(small, {"Content": "low-resolution preview"})


class FetalFlexServicer(pb_grpc.FetalFlexServicer):
    def __init__(self, engine: Engine, settings: ServiceSettings, model: dict[str, str]) -> None:
        self.engine = engine
        self.settings = settings
        self.model = model
        self.size = engine.cfg.image_size
        self.admission = Admission(settings.max_concurrent, settings.max_queued)

    # ------------------------------------------------------------ plumbing
    async def _guard(self, method: str, context: grpc.aio.ServicerContext,
                     body: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await body()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                code = grpc.StatusCode.CANCELLED
                raise
            code, message, reason = status_for(exc)
            if reason != "internal":
                REJECTED_TOTAL.labels(reason).inc()
            await context.abort(code, message)
        finally:
            REQUEST_SECONDS.labels(method, code.name).observe(time.perf_counter() - t0)

    def _stop_for(self, context: grpc.aio.ServicerContext) -> _Stop:
        remaining = context.time_remaining()
        budget = self.settings.default_deadline_s if remaining is None else remaining
        stop = _Stop(time.monotonic() + budget)
        context.add_done_callback(lambda _ctx: stop.event.set())
        return stop

    def _run(self, job: Job, stop: _Stop, on_event: Callable[[dict[str, Any]], None] | None
             ) -> GenerationResult:
        try:
            for ev in self.engine.run_progressive(
                    job.request, layout=job.layout, reference=job.reference,
                    reference_layout=job.reference_layout, should_stop=stop,
                    region=job.region):
                if "result" in ev:
                    return ev["result"]  # type: ignore[no-any-return]
                if on_event is not None:
                    on_event(ev)
        except InterruptedError:
            if stop.reason == "deadline":
                raise DeadlineError("deadline exceeded: generation stopped") from None
            raise CancelledError("cancelled by the client") from None
        raise RuntimeError("generation ended without a result")

    def _account(self, job: Job, res: GenerationResult) -> None:
        n = len(res.samples) * (2 if job.request.pair or job.reference is not None else 1)
        IMAGES_TOTAL.labels(job.request.plane).inc(n)
        for k, v in res.timings.items():
            STAGE_SECONDS.labels(k.removesuffix("_s")).observe(v)

    # ------------------------------------------------------------ RPCs
    async def Generate(self, request: pb.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> pb.GenerateResponse:
        async def body() -> pb.GenerateResponse:
            job = to_job(request, self.settings, self.size)  # all validation, no model yet
            stop = self._stop_for(context)
            async with self.admission.slot():
                res = await asyncio.to_thread(self._run, job, stop, None)
            self._account(job, res)
            return to_response(job, res, self.model)

        return await self._guard("Generate", context, body)  # type: ignore[no-any-return]

    async def GenerateStream(self, request: pb.GenerateRequest,
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateEvent]:
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            job = to_job(request, self.settings, self.size)
            stop = self._stop_for(context)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[pb.GenerateEvent | None] = asyncio.Queue()

            def on_event(ev: dict[str, Any]) -> None:
                prog = pb.Progress(step=int(ev.get("i", 0)) + 1, phase=str(ev.get("phase", "")),
                                   stage=int(ev.get("stage", 0) or 0),
                                   timestep=int(ev.get("t", 0)))
                if job.preview and ev.get("denoised") is not None:
                    prog.preview_png = _preview(ev["denoised"])
                loop.call_soon_threadsafe(queue.put_nowait, pb.GenerateEvent(progress=prog))

            async with self.admission.slot():
                task = asyncio.ensure_future(asyncio.to_thread(self._run, job, stop, on_event))
                task.add_done_callback(lambda _t: loop.call_soon_threadsafe(queue.put_nowait,
                                                                            None))
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    yield item
                res = await task
            self._account(job, res)
            yield pb.GenerateEvent(result=to_response(job, res, self.model))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException as exc:  # noqa: BLE001 - mapped in one place
            code, message, reason = status_for(exc)
            if reason != "internal":
                REJECTED_TOTAL.labels(reason).inc()
            await context.abort(code, message)
        finally:
            REQUEST_SECONDS.labels("GenerateStream", code.name).observe(time.perf_counter() - t0)

    async def ListPlanes(self, request: pb.ListPlanesRequest,
                         context: grpc.aio.ServicerContext) -> pb.ListPlanesResponse:
        async def body() -> pb.ListPlanesResponse:
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

        return await self._guard("ListPlanes", context, body)  # type: ignore[no-any-return]

    async def RenderLayout(self, request: pb.RenderLayoutRequest,
                           context: grpc.aio.ServicerContext) -> pb.RenderLayoutResponse:
        async def body() -> pb.RenderLayoutResponse:
            get_plane(request.plane)
            size = request.size or self.size
            if not 16 <= size <= 1024:
                raise InvalidRequestError("size", "must be within 16..1024")
            layout = _layout("layout", request.layout, request.plane, size,
                             int(request.seed)) if request.HasField("layout") else None
            if layout is None:
                layout = rasterize(sample_template(request.plane, int(request.seed)), size)
            edits = list(get_preset(request.preset).edits(request.plane)) if request.preset \
                else []
            edits += edits_from("edits", request.edits)
            out = apply_edits(layout, edits) if edits else layout
            sl = extract(out)
            resp = pb.RenderLayoutResponse(label_map_png=label_png_bytes(out.label_map),
                                           colour_png=_colour_png(out.label_map),
                                           field_mm=out.field_mm)
            for s in sl.structures:
                resp.structures.shapes.append(pb.Shape(
                    structure=s.structure, kind=s.kind, center_x=s.center[0],
                    center_y=s.center[1], axis_x=s.axes[0], axis_y=s.axes[1],
                    angle_deg=s.angle))
            return resp

        return await self._guard("RenderLayout", context, body)  # type: ignore[no-any-return]


def _colour_png(label_map: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(colourize(label_map)).save(buf, format="PNG")
    return buf.getvalue()

