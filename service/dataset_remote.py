"""``fetalflex dataset run --target``: data set items made by a running service over gRPC
(TLS/mTLS and token as ``fetalflex client``).

The library's data set runner (``fetalflex.dataset``) knows only the ``Maker`` protocol;
this maker lives with the service because it speaks its API. The ``fetalflex`` entry point
hands it to the ``dataset`` command (``fetalflex.cli``), so the library never imports it.
It returns the same pixels as the in-process ``LocalMaker`` for the same request and weights.
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from typing import Any, Final

import grpc
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fetalflex.dataset.makers import Made, ModelInfo
from fetalflex.dataset.plan import Item
from fetalflex.request import DEFAULT_PRECISION, GenerationRequest
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.api_enums import SAMPLER_ENUM
from service.client import _metadata, channel, credentials

# The spec key of a request field (service errors and float32 checks name these).
SPEC_KEYS: Final = {"ga_weeks": "ga_weeks", "guidance": "generation.guidance",
                    "control_scale": "generation.control_scale"}
RETRY_CODES: Final = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED")
BACKOFF_S: Final = (0.5, 20.0)  # first wait, longest wait (doubling)


def _float32(key: str, v: float) -> float:
    if float(np.float32(v)) != v:
        raise ValueError(f"{key}: {v!r} is not exact in the service's float32 field (the "
                         f"images would differ from the recorded request); use e.g. "
                         f"{float(np.float32(round(v * 16) / 16))!r}")
    return v


def to_proto(req: GenerationRequest) -> pb.GenerateRequest:
    """The gRPC request that makes exactly ``req`` (n = 1): every option the request sets
    sent explicitly (an unset steps / guidance / sampler stays unset: the service's weights
    fill it as the embedded engine fills it, ``Engine.resolve``), the gestational age as the
    template's, floats checked to survive float32."""
    if req.n != 1:
        raise ValueError(f"n: one item per request, got {req.n}")
    rp = req.repaint
    repaint = pb.RepaintOptions(
        steps=rp.steps, jump_length=rp.jump_length, jump_n_sample=rp.jump_n_sample,
        feather_px=_float32("generation.repaint.feather_px", rp.feather_px),
        dilate_px=_float32("generation.repaint.dilate_px", rp.dilate_px))
    for name, v in rp.model_dump().items():
        if v == 0:  # the service reads 0 as "unset" (the schema's default)
            raise ValueError(f"generation.repaint.{name}: 0 cannot be sent to the service "
                             f"(it means the default there)")
    given = req.model_fields_set
    out = pb.GenerateRequest(
        plane=req.plane, preset=req.preset or "", count=1, seed=req.seed,
        control_scale=_float32(SPEC_KEYS["control_scale"], req.control_scale),
        repaint=repaint, pair=req.pair, output_format=pb.OUTPUT_FORMAT_PNG,
        return_layouts=True, appearance=req.appearance or "")
    if "steps" in given:
        out.steps = req.steps
    if "guidance" in given:
        out.guidance_scale = _float32(SPEC_KEYS["guidance"], req.guidance)
    if "sampler" in given:
        out.sampler = SAMPLER_ENUM[req.sampler]
    if req.ga_weeks is not None:
        out.layout.template.CopyFrom(pb.Template(
            seed=req.seed, ga_weeks=_float32(SPEC_KEYS["ga_weeks"], req.ga_weeks)))
    for e in req.edits:
        out.edits.append(pb.Edit(json=e.model_dump_json(exclude_none=True)))
    return out


def _png(data: bytes, what: str, item: Item) -> NDArray[np.uint8]:
    if not data:
        raise RuntimeError(f"{item.id}: the service's response has no {what}")
    with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


class ServiceMaker:
    """Items from a running ``fetalflex serve`` (one channel per worker thread, so that a
    Kubernetes Service spreads the connections over its pods); transient failures
    (UNAVAILABLE, RESOURCE_EXHAUSTED: a pod restarting, load shed) are retried with a
    doubling back-off, anything else stops the run naming the item."""

    def __init__(self, target: str, concurrency: int, ca: str | None = None,
                 cert: str | None = None, key: str | None = None, tls: bool = False,
                 token_file: str | None = None, timeout_s: float = 300.0,
                 retries: int = 6) -> None:
        if concurrency < 1:
            raise ValueError(f"--concurrency: must be >= 1, got {concurrency}")
        credentials(ca, cert, key, tls)  # bad options fail here, not once per worker
        self.target, self.concurrency = target, concurrency
        self._tls = (ca, cert, key, tls)
        self._metadata = _metadata(token_file)
        self.timeout_s, self.retries = timeout_s, retries
        self._local = threading.local()
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()

    def _stub(self) -> Any:
        stub = getattr(self._local, "stub", None)
        if stub is None:
            ch = channel(self.target, *self._tls)
            with self._lock:
                self._channels.append(ch)
            stub = self._local.stub = pb_grpc.FetalFlexStub(ch)
        return stub

    def _call(self, item: Item, req: pb.GenerateRequest) -> pb.GenerateResponse:
        wait = BACKOFF_S[0]
        for attempt in range(self.retries + 1):
            try:
                return self._stub().Generate(req, metadata=self._metadata,
                                             timeout=self.timeout_s)
            except grpc.RpcError as exc:
                code = exc.code().name
                if code not in RETRY_CODES or attempt == self.retries:
                    raise RuntimeError(f"{item.id}: the service at {self.target} answered "
                                       f"{code}: {exc.details()}") from None
            time.sleep(wait)
            wait = min(wait * 2, BACKOFF_S[1])
        raise AssertionError("unreachable")  # pragma: no cover

    def make(self, item: Item) -> Made:
        resp = self._call(item, to_proto(item.request))
        if len(resp.samples) != 1 or not resp.synthetic:
            raise RuntimeError(f"{item.id}: the service returned {len(resp.samples)} samples "
                               f"(synthetic={resp.synthetic}), expected one synthetic sample")
        (s,) = resp.samples
        if s.seed != item.seed:
            raise RuntimeError(f"{item.id}: the service made seed {s.seed}, not {item.seed}")
        # a service older than the precision field ran the default precision
        model = ModelInfo(resp.model_name, resp.model_sha256, resp.backend,
                          resp.precision or DEFAULT_PRECISION)
        # the item's request with what the server filled in for it (sampling, look); the
        # GA travels in the template, so the server's own request does not carry it
        ran = None
        if resp.request_json:
            srv = GenerationRequest.model_validate_json(resp.request_json)
            ran = item.request.model_copy(update={k: getattr(srv, k) for k in (
                "steps", "guidance", "sampler", "appearance")})
        image, labels = _png(s.image.data, "image", item), _png(s.label_map_png, "label map",
                                                                 item)
        if not item.pair:
            return Made(image, labels, model, request=ran)
        return Made(image, labels, model, _png(s.abnormal_image.data, "twin", item),
                    _png(s.abnormal_label_map_png, "twin label map", item),
                    _png(s.edit_region_png, "region", item) > 0, request=ran)

    def close(self) -> None:
        with self._lock:
            for ch in self._channels:
                ch.close()
            self._channels.clear()


def maker_from_args(args: argparse.Namespace, concurrency: int) -> ServiceMaker:
    """The maker for ``fetalflex dataset run``'s ``--target`` and connection flags."""
    return ServiceMaker(args.target, concurrency, ca=args.ca, cert=args.cert, key=args.key,
                        tls=args.tls, token_file=args.token_file, timeout_s=args.timeout)
