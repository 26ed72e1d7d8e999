"""proto <-> domain objects. Validation errors name the proto field and the reason.

Every input is bounded before work starts: PNG dimensions are read from the IHDR header
before any decoding, edit JSON is bounded in size, count and nesting, structure lists in
shapes, and a layout to extract in label components times pixels. These functions are
CPU work: the servicer runs them in worker threads, never on the event loop.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError
from scipy import ndimage

from fetalflex.anatomy.biometry import GA_MAX, GA_MIN
from fetalflex.anatomy.compose import (
    MAX_EDITS,
    edit_list,
    edits_from_json,
    label_map_layout,
    normal_layout,
    render_anatomy,
    structures_layout,
)
from fetalflex.anatomy.edits import Edit
from fetalflex.anatomy.layout import (
    DEFAULT_FIELD_MM,
    FIELD_MM_MAX,
    Layout,
    Shape,
    StructureList,
)
from fetalflex.anatomy.planes import canonical_code
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.render import colourize
from fetalflex.anatomy.structures import NUM_LABELS, UNLABELLED
from fetalflex.anatomy.vocabulary import vocabulary, vocabulary_json
from fetalflex.errors import InvalidRequestError, field_errors
from fetalflex.generation import GenerationResult, Sample
from fetalflex.io.dicom import edit_summary as dicom_edit_summary
from fetalflex.io.png import SYNTHETIC, Provenance
from fetalflex.model.config import DenoiserConfig
from fetalflex.request import (
    COUNT_MAX,
    SEED_LIMIT,
    STEPS_MAX,
    GenerationRequest,
    RepaintSettings,
)
from fetalflex.sampling.schedules import count_calls, repaint_transitions, trailing_timesteps
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api_enums import SAMPLER_NAME
from service.config import ServiceSettings
from service.outputs import SyntheticStudy, dicom_pair, label_png_bytes, png_bytes, raw_float32

TRAIN_TIMESTEPS: int = DenoiserConfig.model_fields["num_train_timesteps"].default
SCHEMA = GenerationRequest.model_fields  # the defaults of unset fields

FORMATS = {pb.OUTPUT_FORMAT_UNSPECIFIED: "png", pb.OUTPUT_FORMAT_PNG: "png",
           pb.OUTPUT_FORMAT_DICOM: "dicom", pb.OUTPUT_FORMAT_RAW_FLOAT32: "raw_float32"}
# Proto field names of the domain request's fields (its validation errors name these).
PROTO_FIELDS = {"n": "count", "guidance": "guidance_scale"}

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_NAME = 64  # plane and preset names
MAX_SHAPES = 128
RENDER_SIZES = (16, 1024)
MAX_COMPONENTS = 256  # label components a layout to extract may have
# Extraction costs about 1.5e-7 s per component per pixel: this bounds it near 4 s.
MAX_COMPONENT_PIXELS = 24 * 1024 * 1024


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


# ---------------------------------------------------------------- PNG inputs

def png_dimensions(field: str, data: bytes) -> tuple[int, int]:
    """(width, height) from the PNG signature and IHDR chunk, without decoding."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise InvalidRequestError(field, "not a PNG (no PNG signature and IHDR header)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                  zlib.error, struct.error, Image.DecompressionBombError)


def _decode(field: str, data: bytes, label: bool) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            if label and im.mode not in ("L", "P"):
                raise InvalidRequestError(field, f"a label map must be 8-bit grayscale or "
                                                 f"palette, not mode {im.mode}")
            return np.asarray(im if label else im.convert("L"), dtype=np.uint8)
    except InvalidRequestError:
        raise
    except _DECODE_ERRORS as exc:
        raise InvalidRequestError(field, f"not a readable PNG ({type(exc).__name__})") from None


def _png(field: str, data: bytes, size: int, label: bool, needs: str = "the model needs"
         ) -> np.ndarray:
    width, height = png_dimensions(field, data)
    if (width, height) != (size, size):  # refused before a byte is decompressed
        raise InvalidRequestError(field, f"is {width}x{height}, {needs} {size}x{size}")
    arr = _decode(field, data, label)
    if arr.shape != (size, size):
        raise InvalidRequestError(field, f"decodes to {arr.shape[1]}x{arr.shape[0]}, {needs} "
                                         f"{size}x{size}")
    if label:
        bad = sorted(set(np.unique(arr).tolist()) - set(range(NUM_LABELS)) - {UNLABELLED})
        if bad:
            raise InvalidRequestError(field, f"unknown label ids {bad[:8]} (ids 0.."
                                             f"{NUM_LABELS - 1}, {UNLABELLED} = not labelled)")
    return arr


# ---------------------------------------------------------------- scalars and names

def _finite(field: str, v: float) -> float:
    if not math.isfinite(v):
        raise InvalidRequestError(field, "must be a finite number")
    return v


def _field_mm(field: str, v: float) -> float:
    """0 (unset) means the default; otherwise finite and within (0, FIELD_MM_MAX]."""
    if v == 0:
        return DEFAULT_FIELD_MM
    if not math.isfinite(v) or not 0 < v <= FIELD_MM_MAX:
        raise InvalidRequestError(field, f"must be within (0, {FIELD_MM_MAX:g}] mm, got {v:g}")
    return v


def _name(field: str, value: str) -> str:
    if len(value) > MAX_NAME:
        raise InvalidRequestError(field, f"unknown ({len(value)} characters; names are "
                                         f"at most {MAX_NAME})")
    return value


def _plane(value: str) -> str:
    """Planes are case-insensitive here as everywhere ('tv' is TV: ``canonical_code``)."""
    code = canonical_code(_name("plane", value))
    try:
        get_plane(code)
    except InvalidRequestError as exc:
        raise InvalidRequestError("plane", str(exc).removeprefix("plane: ")) from None
    return code


def _seed(field: str, v: int) -> int:
    if not 0 <= v < SEED_LIMIT:
        raise InvalidRequestError(field, f"must be within 0..{SEED_LIMIT - 1}")
    return v


def _domain_error(exc: ValidationError, prefix: str = "") -> InvalidRequestError:
    """A domain model's validation error, named by the proto field."""
    return field_errors(exc, prefix, rename=PROTO_FIELDS)[0]


# ---------------------------------------------------------------- layouts and edits

def _from_template(field: str, t: pb.Template, plane: str, size: int, seed: int) -> Layout:
    ga = _finite(f"{field}.template.ga_weeks", t.ga_weeks) or None
    if ga is not None and not GA_MIN <= ga <= GA_MAX:
        raise InvalidRequestError(f"{field}.template.ga_weeks",
                                  f"must be within {GA_MIN:g}..{GA_MAX:g} weeks")
    tseed = t.seed or seed
    if tseed < 0:
        raise InvalidRequestError(f"{field}.template.seed", "must not be negative")
    try:
        return normal_layout(plane, size, seed=int(tseed), ga_weeks=ga)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{field}.template", str(exc)) from None


def _from_shapes(field: str, msg: pb.StructureList, plane: str, size: int, field_mm: float
                 ) -> Layout:
    if len(msg.shapes) > MAX_SHAPES:
        raise InvalidRequestError(f"{field}.structures.shapes",
                                  f"at most {MAX_SHAPES} shapes, got {len(msg.shapes)}")
    shapes = []
    for i, s in enumerate(msg.shapes):
        try:
            shapes.append(Shape.model_validate({
                "structure": s.structure, "kind": s.kind or "ellipse",
                "center": (s.center_x, s.center_y), "axes": (s.axis_x, s.axis_y),
                "angle": s.angle_deg}))
        except ValidationError as exc:
            raise _domain_error(exc, f"{field}.structures.shapes[{i}].") from None
    try:
        sl = StructureList.model_validate({"plane": plane, "field_mm": field_mm,
                                           "structures": tuple(shapes),
                                           **({"fill": msg.fill} if msg.fill else {}),
                                           **({"sector": msg.sector} if msg.sector else {})})
    except ValidationError as exc:
        raise InvalidRequestError(f"{field}.structures", field_errors(exc)[0].reason) from None
    return structures_layout(f"{field}.structures", sl, plane, size)


def _label_layout(field: str, arr: np.ndarray, plane: str, field_mm: float) -> Layout:
    return label_map_layout(field, arr, plane, arr.shape[0], field_mm)


def _layout(field: str, msg: pb.Layout, plane: str, size: int, seed: int,
            needs: str = "the model needs") -> Layout | None:
    which = msg.WhichOneof("source")
    field_mm = _field_mm(f"{field}.field_mm", msg.field_mm)
    if which is None:
        return None
    if which == "template":
        return _from_template(field, msg.template, plane, size, seed)
    if which == "label_map_png":
        arr = _png(f"{field}.label_map_png", msg.label_map_png, size, label=True, needs=needs)
        return _label_layout(f"{field}.label_map_png", arr, plane, field_mm)
    return _from_shapes(field, msg.structures, plane, size, field_mm)


def _check_edit_planes(field: str, plane: str, edits: list[Any]) -> None:
    """Structures an edit names must belong to the plane: refused before admission."""
    p = get_plane(plane)
    for i, e in enumerate(edits):
        try:
            e.check_plane(p)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{field}[{i}].{exc.field}", exc.reason) from None


def edits_from(field: str, edits: Any) -> list[Edit]:
    """The API's Edit messages -> edits (``anatomy.compose.edits_from_json``)."""
    return edits_from_json(field, [e.json for e in edits], text_key="json")


# ---------------------------------------------------------------- Generate

def _service_range(field: str, value: int, limit: int, setting: str, schema_max: int) -> None:
    """A count within the service's own limit, in the schema's range-error format."""
    if value < 1:
        raise InvalidRequestError(field, f"must be >= 1, got {value}")
    if value > limit:
        raise InvalidRequestError(field, f"must be <= {limit}, got {value} (this service's "
                                         f"{setting}; the request schema allows up to "
                                         f"{schema_max})")


def _scalars(req: pb.GenerateRequest, settings: ServiceSettings) -> dict[str, Any]:
    """The cheap checks, first: counts, seeds, numbers, enum values, names."""
    # Unset optional fields stay unset: the request schema (GenerationRequest) fills them;
    # the service's own limits apply to the value that will run, given or default.
    count = req.count if req.HasField("count") else SCHEMA["n"].default
    _service_range("count", count, settings.max_count, "max_count", COUNT_MAX)
    steps = req.steps if req.HasField("steps") else SCHEMA["steps"].default
    _service_range("steps", steps, settings.max_steps, "max_steps", STEPS_MAX)
    if req.sampler not in SAMPLER_NAME:
        raise InvalidRequestError("sampler", f"unknown value {req.sampler}")
    if req.output_format not in FORMATS:
        raise InvalidRequestError("output_format", f"unknown value {req.output_format}")
    out: dict[str, Any] = {"plane": _plane(req.plane), "n": count,
                           "seed": _seed("seed", req.seed),
                           "preset": _name("preset", req.preset) or None, "pair": req.pair}
    if req.sampler != pb.SAMPLER_UNSPECIFIED:  # unset: the weights' (Engine.resolve)
        out["sampler"] = SAMPLER_NAME[req.sampler]
    if req.HasField("steps"):
        out["steps"] = req.steps
    if req.HasField("guidance_scale"):
        out["guidance"] = _finite("guidance_scale", req.guidance_scale)
    if req.HasField("control_scale"):
        out["control_scale"] = _finite("control_scale", req.control_scale)
    if req.appearance:
        out["appearance"] = _name("appearance", req.appearance)
    return out


def _repaint(rp: pb.RepaintOptions) -> RepaintSettings:
    given = {"steps": rp.steps, "jump_length": rp.jump_length,
             "jump_n_sample": rp.jump_n_sample,
             "feather_px": _finite("repaint.feather_px", rp.feather_px),
             "dilate_px": _finite("repaint.dilate_px", rp.dilate_px)}
    try:
        return RepaintSettings.model_validate({k: v for k, v in given.items() if v})
    except ValidationError as exc:
        raise _domain_error(exc, "repaint.") from None


def _domain(req: pb.GenerateRequest, settings: ServiceSettings) -> GenerationRequest:
    scalars = _scalars(req, settings)
    if len(req.edits) > MAX_EDITS:
        raise InvalidRequestError("edits", f"at most {MAX_EDITS} edits, got {len(req.edits)}")
    edits = edits_from("edits", req.edits)
    _check_edit_planes("edits", scalars["plane"], edits)
    try:
        domain = GenerationRequest(**scalars, edits=tuple(edits),
                                   repaint=_repaint(req.repaint))
    except ValidationError as exc:
        raise _domain_error(exc) from None
    if domain.pair or req.reference_png:
        rp = domain.repaint
        calls = count_calls(repaint_transitions(
            trailing_timesteps(TRAIN_TIMESTEPS, rp.steps), rp.jump_length, rp.jump_n_sample))
        if calls > settings.max_repaint_calls:
            raise InvalidRequestError("repaint", f"the schedule makes {calls} denoiser calls; "
                                                 f"this service allows "
                                                 f"{settings.max_repaint_calls}")
    return domain


def _check_references(req: pb.GenerateRequest, domain: GenerationRequest) -> None:
    """Which images go together; refused here, before any slot is taken."""
    if req.reference_label_map_png and not req.reference_png:
        raise InvalidRequestError("reference_label_map_png", "only with reference_png")
    if req.reference_png:
        if not req.reference_label_map_png:
            raise InvalidRequestError("reference_label_map_png", "required with reference_png")
        domain.check_reference("reference_png")
    if req.reference_png and req.output_format == pb.OUTPUT_FORMAT_DICOM:
        raise InvalidRequestError("output_format", "a repaint of reference_png holds the "
                                  "caller's pixels; DICOM output marks images wholly "
                                  "synthetic, so it is refused here: ask for PNG (its text "
                                  "says which pixels were generated) or raw")
    if req.edit_region_png and not req.reference_png and not domain.pair:
        raise InvalidRequestError("edit_region_png", "only with reference_png or pair")


def to_job(req: pb.GenerateRequest, settings: ServiceSettings, size: int) -> Job:
    domain = _domain(req, settings)
    _check_references(req, domain)
    plane = domain.plane  # canonical ('tt' -> TT)
    layout = _layout("layout", req.layout, plane, size, req.seed) if req.HasField(
        "layout") else None
    reference = ref_layout = region = None
    if req.reference_png:
        reference = _png("reference_png", req.reference_png, size, label=False)
        arr = _png("reference_label_map_png", req.reference_label_map_png, size, label=True)
        ref_layout = _label_layout("reference_label_map_png", arr, plane,
                                   _field_mm("layout.field_mm", req.layout.field_mm))
    if req.edit_region_png:
        region = _png("edit_region_png", req.edit_region_png, size, label=False) > 0
    return Job(domain, layout, reference, ref_layout, region, FORMATS[req.output_format],
               req.return_layouts, req.preview, req.client_request_id)


# ---------------------------------------------------------------- RenderLayout

def _components(label_map: np.ndarray) -> int:
    return sum(int(ndimage.label(label_map == v)[1]) for v in np.unique(label_map).tolist())


def _check_extract_cost(field: str, label_map: np.ndarray) -> None:
    n, px = _components(label_map), label_map.size
    if n > MAX_COMPONENTS or n * px > MAX_COMPONENT_PIXELS:
        raise InvalidRequestError(field, f"{n} label components at {label_map.shape[0]} px "
                                         f"exceed the extraction bound ({MAX_COMPONENTS} "
                                         f"components, {MAX_COMPONENT_PIXELS} components x "
                                         f"pixels)")


def _render_edits(req: pb.RenderLayoutRequest) -> tuple[str | None, list[Edit]]:
    """The preset and edits, checked before any layout is built."""
    if len(req.edits) > MAX_EDITS:
        raise InvalidRequestError("edits", f"at most {MAX_EDITS} edits, got {len(req.edits)}")
    plane = _plane(req.plane)
    preset = _name("preset", req.preset) or None
    if preset is not None:
        try:
            edit_list(plane, preset, ())
        except InvalidRequestError as exc:
            raise InvalidRequestError("preset", str(exc).removeprefix("preset: ")) from None
    extra = edits_from("edits", req.edits)
    _check_edit_planes("edits", plane, extra)
    return preset, extra


def render_layout(req: pb.RenderLayoutRequest, default_size: int) -> pb.RenderLayoutResponse:
    """Template or given layout, plus preset and edits -> maps and extracted shapes."""
    plane = _plane(req.plane)
    size = req.size or default_size
    if not RENDER_SIZES[0] <= size <= RENDER_SIZES[1]:
        raise InvalidRequestError("size", f"must be within {RENDER_SIZES[0]}.."
                                          f"{RENDER_SIZES[1]}")
    seed = _seed("seed", req.seed)
    preset, edits = _render_edits(req)
    layout = _layout("layout", req.layout, plane, size, seed, needs="the request's size is"
                     ) if req.HasField("layout") else None
    where = "layout" if req.HasField("layout") else "size"
    # edits, too, work per component: bounded before they run, and the result before the
    # shapes are extracted from it
    out, sl = render_anatomy(plane, size, layout=layout, seed=seed, preset=preset,
                             edits=edits,
                             bound=lambda lay: _check_extract_cost(where, lay.label_map))
    resp = pb.RenderLayoutResponse(label_map_png=label_png_bytes(out.label_map),
                                   colour_png=_colour_png(out.label_map), field_mm=out.field_mm)
    for s in sl.structures:
        resp.structures.shapes.append(pb.Shape(
            structure=s.structure, kind=s.kind, center_x=s.center[0], center_y=s.center[1],
            axis_x=s.axes[0], axis_y=s.axes[1], angle_deg=s.angle))
    resp.structures.fill = sl.fill
    resp.structures.sector = sl.sector
    return resp


def _colour_png(label_map: np.ndarray) -> bytes:
    return png_bytes(colourize(label_map), {"Content": "FetalFlex layout (colour picture)"})


# ---------------------------------------------------------------- responses

def planes_response() -> pb.ListPlanesResponse:
    """The vocabulary (planes, structures, presets) as ListPlanes answers it."""
    v = vocabulary()
    return pb.ListPlanesResponse(
        structures=[pb.StructureInfo(id=s["id"], name=s["name"], display=s["display"])
                    for s in v["structures"]],
        planes=[pb.PlaneInfo(code=p["code"], name=p["name"], description=p["description"],
                             structures=p["structures"], presets=p["presets"])
                for p in v["planes"]],
        presets=[pb.PresetInfo(name=p["name"], meaning=p["meaning"], planes=p["planes"],
                               changes=p["changes"]) for p in v["presets"]],
        vocabulary_json=vocabulary_json())


def edit_summary(req: GenerationRequest) -> str:
    """The preset and edits that make a twin, for its DICOM DerivationDescription."""
    return dicom_edit_summary(req.preset, req.edits)


def _image(img: np.ndarray, fmt: str, meta: dict[str, str], plane: str, seed: int,
           data: bytes | None = None, provenance: Provenance = SYNTHETIC) -> pb.Image:
    h, w = img.shape
    if data is None:
        data = raw_float32(img) if fmt == "raw_float32" else png_bytes(
            img, {**meta, "Seed": str(seed), "Plane": plane}, provenance)
    return pb.Image(data=data, format=fmt, width=w, height=h)


def _sample(job: Job, s: Sample, meta: dict[str, str], model: dict[str, str]
            ) -> pb.GeneratedSample:
    plane, fmt = job.request.plane, job.output_format
    dicom: tuple[bytes | None, bytes | None] = (None, None)
    if fmt == "dicom":
        study = SyntheticStudy(model["name"], model["version"], plane, s.seed)
        dicom = dicom_pair(s.image, s.abnormal_image, study, edit_summary(job.request))
    # A repaint of the caller's image holds the caller's pixels: the image is theirs, the
    # twin is theirs but for the edit region (edit_region_png says which pixels).
    user = job.reference is not None
    g = pb.GeneratedSample(seed=s.seed, image=_image(
        s.image, fmt, meta, plane, s.seed, dicom[0], Provenance("user") if user else SYNTHETIC))
    if s.abnormal_image is not None:
        twin = (Provenance("partial", int(s.region.sum()) if s.region is not None else 0,
                           "edit_region_png") if user else SYNTHETIC)
        g.abnormal_image.CopyFrom(_image(s.abnormal_image, fmt, meta, plane, s.seed,
                                         dicom[1], twin))
    if s.region is not None:
        g.edit_region_png = label_png_bytes((s.region * 255).astype(np.uint8))
    if job.return_layouts:
        g.label_map_png = label_png_bytes(s.layout.label_map)
        if s.abnormal_layout is not None:
            g.abnormal_label_map_png = label_png_bytes(s.abnormal_layout.label_map)
    return g


def to_response(job: Job, res: GenerationResult, model: dict[str, str]) -> pb.GenerateResponse:
    meta = {"Model": model["name"], "ModelVersion": model["version"],
            "ModelSHA256": model["sha256"][:16]}
    out = pb.GenerateResponse(model_name=model["name"], model_version=model["version"],
                              model_sha256=model["sha256"], backend=model["backend"],
                              precision=model.get("precision", ""),
                              denoiser_calls=res.denoiser_calls, seconds=res.seconds,
                              appearance=res.appearance,
                              client_request_id=job.client_request_id,
                              # a repaint of the caller's image holds the caller's pixels
                              synthetic=job.reference is None,
                              request_json=(res.request or job.request).model_dump_json())
    out.samples.extend(_sample(job, s, meta, model) for s in res.samples)
    for k, v in res.timings.items():
        out.timings.append(pb.StageTiming(stage=k.removesuffix("_s"), seconds=v))
    return out
