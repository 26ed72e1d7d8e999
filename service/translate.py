"""proto <-> domain objects. Validation errors name the proto field and the reason."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from fetalflex.anatomy.edits import parse_edits
from fetalflex.anatomy.layout import Layout, Shape, StructureList, rasterize
from fetalflex.anatomy.structures import NUM_LABELS
from fetalflex.anatomy.templates import sample_template
from fetalflex.generation import GenerationRequest, GenerationResult, RepaintSettings
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.config import ServiceSettings
from service.errors import InvalidRequestError
from service.outputs import dicom_bytes, label_png_bytes, png_bytes, raw_float32

SAMPLERS = {pb.SAMPLER_UNSPECIFIED: "ddim", pb.SAMPLER_DDIM: "ddim",
            pb.SAMPLER_DPM_SOLVER_PP: "dpmsolver++", pb.SAMPLER_TWO_STAGE: "two-stage"}
FORMATS = {pb.OUTPUT_FORMAT_UNSPECIFIED: "png", pb.OUTPUT_FORMAT_PNG: "png",
           pb.OUTPUT_FORMAT_DICOM: "dicom", pb.OUTPUT_FORMAT_RAW_FLOAT32: "raw_float32"}


@dataclass
class Job:
    request: GenerationRequest
    layout: Layout | None
    reference: np.ndarray | None
    reference_layout: Layout | None
    region: np.ndarray | None
    output_format: str
    return_layouts: bool
    preview: bool
    client_request_id: str


def _png(field: str, data: bytes, size: int, label: bool) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise InvalidRequestError(field, f"must be a PNG, got {im.format}")
            if label and im.mode not in ("L", "P"):
                raise InvalidRequestError(field, f"a label map must be 8-bit grayscale or "
                                                 f"palette, not mode {im.mode}")
            arr = np.asarray(im if label else im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidRequestError(field, f"not a readable PNG ({type(exc).__name__})") from None
    if arr.shape != (size, size):
        raise InvalidRequestError(field, f"is {arr.shape[1]}x{arr.shape[0]}, the model needs "
                                         f"{size}x{size}")
    if label:
        bad = sorted(set(np.unique(arr).tolist()) - set(range(NUM_LABELS)))
        if bad:
            raise InvalidRequestError(field, f"unknown label ids {bad[:8]}")
    return arr


def _finite(field: str, v: float) -> float:
    if not math.isfinite(v):
        raise InvalidRequestError(field, "must be a finite number")
    return v


def _layout(field: str, msg: pb.Layout, plane: str, size: int, seed: int) -> Layout | None:
    which = msg.WhichOneof("source")
    field_mm = _finite(f"{field}.field_mm", msg.field_mm) or 100.0
    if which is None:
        return None
    if which == "template":
        ga = _finite(f"{field}.template.ga_weeks", msg.template.ga_weeks) or None
        try:
            sl = sample_template(plane, int(msg.template.seed or seed), ga)
        except ValueError as exc:
            raise InvalidRequestError(f"{field}.template", str(exc)) from None
        return rasterize(sl, size)
    if which == "label_map_png":
        arr = _png(f"{field}.label_map_png", msg.label_map_png, size, label=True)
        try:
            return Layout(plane, arr, field_mm)
        except ValueError as exc:
            raise InvalidRequestError(f"{field}.label_map_png", str(exc)) from None
    shapes = []
    for i, s in enumerate(msg.structures.shapes):
        try:
            shapes.append(Shape(structure=s.structure, kind=s.kind or "ellipse",
                                center=(s.center_x, s.center_y), axes=(s.axis_x, s.axis_y),
                                angle=s.angle_deg))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidRequestError(f"{field}.structures.shapes[{i}].{err['loc'][0]}",
                                      str(err["msg"]).removeprefix("Value error, ")) from None
    try:
        sl = StructureList(plane=plane, field_mm=field_mm, structures=tuple(shapes))
    except ValidationError as exc:
        raise InvalidRequestError(f"{field}.structures",
                                  str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
                                  ) from None
    return rasterize(sl, size)


def edits_from(field: str, edits: Any) -> list[Any]:
    out: list[Any] = []
    for i, e in enumerate(edits):
        try:
            out += parse_edits(json.loads(e.json))
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{field}[{i}].json", f"not valid JSON ({exc.msg})"
                                      ) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise InvalidRequestError(f"{field}[{i}].{loc}" if loc else f"{field}[{i}]",
                                      str(err["msg"]).removeprefix("Value error, ")) from None
    return out


def to_job(req: pb.GenerateRequest, settings: ServiceSettings, size: int) -> Job:
    count = req.count if req.HasField("count") else 1
    steps = req.steps if req.HasField("steps") else 10
    if not 1 <= count <= settings.max_count:
        raise InvalidRequestError("count", f"must be within 1..{settings.max_count}, "
                                           f"got {count}")
    if not 1 <= steps <= settings.max_steps:
        raise InvalidRequestError("steps", f"must be within 1..{settings.max_steps}, "
                                           f"got {steps}")
    if req.seed < 0 or req.seed >= 2**31:
        raise InvalidRequestError("seed", "must be within 0..2^31-1")
    guidance = (_finite("guidance_scale", req.guidance_scale)
                if req.HasField("guidance_scale") else 2.0)
    control = (_finite("control_scale", req.control_scale)
               if req.HasField("control_scale") else 1.0)
    rp = req.repaint
    repaint = RepaintSettings(**{k: v for k, v in {
        "steps": rp.steps, "jump_length": rp.jump_length, "jump_n_sample": rp.jump_n_sample,
        "feather_px": _finite("repaint.feather_px", rp.feather_px),
        "dilate_px": _finite("repaint.dilate_px", rp.dilate_px)}.items() if v})
    domain = GenerationRequest(
        plane=req.plane, n=count, seed=req.seed, steps=steps,
        guidance=guidance, control_scale=control,
        sampler=SAMPLERS.get(req.sampler, "ddim"), preset=req.preset or None,
        edits=tuple(edits_from("edits", req.edits)), pair=req.pair, repaint=repaint)
    layout = _layout("layout", req.layout, req.plane, size, req.seed) if req.HasField(
        "layout") else None
    reference = ref_layout = region = None
    if req.reference_png:
        reference = _png("reference_png", req.reference_png, size, label=False)
        if not req.reference_label_map_png:
            raise InvalidRequestError("reference_label_map_png", "required with reference_png")
        ref_layout = Layout(req.plane, _png("reference_label_map_png",
                                            req.reference_label_map_png, size, label=True),
                            req.layout.field_mm or 100.0)
        if not domain.edit_list() and not req.edit_region_png:
            raise InvalidRequestError("edits", "a repaint needs a preset, edits or an "
                                               "edit_region_png")
    if req.edit_region_png:
        if reference is None and not domain.pair:
            raise InvalidRequestError("edit_region_png", "only with reference_png or pair")
        region = _png("edit_region_png", req.edit_region_png, size, label=False) > 0
    if req.output_format not in FORMATS:
        raise InvalidRequestError("output_format", f"unknown value {req.output_format}")
    return Job(domain, layout, reference, ref_layout, region, FORMATS[req.output_format],
               req.return_layouts, req.preview, req.client_request_id)


def _image(img: np.ndarray, fmt: str, meta: dict[str, str], plane: str, seed: int) -> pb.Image:
    h, w = img.shape
    if fmt == "dicom":
        data = dicom_bytes(img, meta["Model"], meta["ModelVersion"], seed, plane)
    elif fmt == "raw_float32":
        data = raw_float32(img)
    else:
        data = png_bytes(img, {**meta, "Seed": str(seed), "Plane": plane})
    return pb.Image(data=data, format=fmt, width=w, height=h)


def to_response(job: Job, res: GenerationResult, model: dict[str, str]) -> pb.GenerateResponse:
    meta = {"Model": model["name"], "ModelVersion": model["version"],
            "ModelSHA256": model["sha256"][:16]}
    out = pb.GenerateResponse(model_name=model["name"], model_version=model["version"],
                              model_sha256=model["sha256"], backend=model["backend"],
                              denoiser_calls=res.denoiser_calls, seconds=res.seconds,
                              client_request_id=job.client_request_id, synthetic=True)
    plane = job.request.plane
    for s in res.samples:
        g = pb.GeneratedSample(seed=s.seed, image=_image(s.image, job.output_format, meta,
                                                         plane, s.seed))
        if s.abnormal_image is not None:
            g.abnormal_image.CopyFrom(_image(s.abnormal_image, job.output_format, meta,
                                             plane, s.seed))
        if s.region is not None:
            g.edit_region_png = label_png_bytes((s.region * 255).astype(np.uint8))
        if job.return_layouts:
            g.label_map_png = label_png_bytes(s.layout.label_map)
            if s.abnormal_layout is not None:
                g.abnormal_label_map_png = label_png_bytes(s.abnormal_layout.label_map)
        out.samples.append(g)
    for k, v in res.timings.items():
        out.timings.append(pb.StageTiming(stage=k.removesuffix("_s"), seconds=v))
    return out
