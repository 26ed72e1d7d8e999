from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Sampler(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLER_UNSPECIFIED: _ClassVar[Sampler]
    SAMPLER_DDIM: _ClassVar[Sampler]
    SAMPLER_DPM_SOLVER_PP: _ClassVar[Sampler]
    SAMPLER_TWO_STAGE: _ClassVar[Sampler]

class OutputFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_FORMAT_UNSPECIFIED: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_PNG: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_DICOM: _ClassVar[OutputFormat]
    OUTPUT_FORMAT_RAW_FLOAT32: _ClassVar[OutputFormat]
SAMPLER_UNSPECIFIED: Sampler
SAMPLER_DDIM: Sampler
SAMPLER_DPM_SOLVER_PP: Sampler
SAMPLER_TWO_STAGE: Sampler
OUTPUT_FORMAT_UNSPECIFIED: OutputFormat
OUTPUT_FORMAT_PNG: OutputFormat
OUTPUT_FORMAT_DICOM: OutputFormat
OUTPUT_FORMAT_RAW_FLOAT32: OutputFormat

class Shape(_message.Message):
    __slots__ = ("structure", "kind", "center_x", "center_y", "axis_x", "axis_y", "angle_deg")
    STRUCTURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CENTER_X_FIELD_NUMBER: _ClassVar[int]
    CENTER_Y_FIELD_NUMBER: _ClassVar[int]
    AXIS_X_FIELD_NUMBER: _ClassVar[int]
    AXIS_Y_FIELD_NUMBER: _ClassVar[int]
    ANGLE_DEG_FIELD_NUMBER: _ClassVar[int]
    structure: str
    kind: str
    center_x: float
    center_y: float
    axis_x: float
    axis_y: float
    angle_deg: float
    def __init__(self, structure: _Optional[str] = ..., kind: _Optional[str] = ..., center_x: _Optional[float] = ..., center_y: _Optional[float] = ..., axis_x: _Optional[float] = ..., axis_y: _Optional[float] = ..., angle_deg: _Optional[float] = ...) -> None: ...

class StructureList(_message.Message):
    __slots__ = ("shapes", "fill", "sector")
    SHAPES_FIELD_NUMBER: _ClassVar[int]
    FILL_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    shapes: _containers.RepeatedCompositeFieldContainer[Shape]
    fill: str
    sector: str
    def __init__(self, shapes: _Optional[_Iterable[_Union[Shape, _Mapping]]] = ..., fill: _Optional[str] = ..., sector: _Optional[str] = ...) -> None: ...

class Template(_message.Message):
    __slots__ = ("seed", "ga_weeks")
    SEED_FIELD_NUMBER: _ClassVar[int]
    GA_WEEKS_FIELD_NUMBER: _ClassVar[int]
    seed: int
    ga_weeks: float
    def __init__(self, seed: _Optional[int] = ..., ga_weeks: _Optional[float] = ...) -> None: ...

class Layout(_message.Message):
    __slots__ = ("template", "label_map_png", "structures", "field_mm")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_MAP_PNG_FIELD_NUMBER: _ClassVar[int]
    STRUCTURES_FIELD_NUMBER: _ClassVar[int]
    FIELD_MM_FIELD_NUMBER: _ClassVar[int]
    template: Template
    label_map_png: bytes
    structures: StructureList
    field_mm: float
    def __init__(self, template: _Optional[_Union[Template, _Mapping]] = ..., label_map_png: _Optional[bytes] = ..., structures: _Optional[_Union[StructureList, _Mapping]] = ..., field_mm: _Optional[float] = ...) -> None: ...

class Edit(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class RepaintOptions(_message.Message):
    __slots__ = ("steps", "jump_length", "jump_n_sample", "feather_px", "dilate_px")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    JUMP_LENGTH_FIELD_NUMBER: _ClassVar[int]
    JUMP_N_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    FEATHER_PX_FIELD_NUMBER: _ClassVar[int]
    DILATE_PX_FIELD_NUMBER: _ClassVar[int]
    steps: int
    jump_length: int
    jump_n_sample: int
    feather_px: float
    dilate_px: float
    def __init__(self, steps: _Optional[int] = ..., jump_length: _Optional[int] = ..., jump_n_sample: _Optional[int] = ..., feather_px: _Optional[float] = ..., dilate_px: _Optional[float] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("plane", "layout", "preset", "edits", "reference_png", "reference_label_map_png", "edit_region_png", "count", "seed", "steps", "guidance_scale", "control_scale", "sampler", "repaint", "output_format", "pair", "return_layouts", "preview", "client_request_id", "appearance")
    PLANE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_PNG_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_LABEL_MAP_PNG_FIELD_NUMBER: _ClassVar[int]
    EDIT_REGION_PNG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    CONTROL_SCALE_FIELD_NUMBER: _ClassVar[int]
    SAMPLER_FIELD_NUMBER: _ClassVar[int]
    REPAINT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    RETURN_LAYOUTS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPEARANCE_FIELD_NUMBER: _ClassVar[int]
    plane: str
    layout: Layout
    preset: str
    edits: _containers.RepeatedCompositeFieldContainer[Edit]
    reference_png: bytes
    reference_label_map_png: bytes
    edit_region_png: bytes
    count: int
    seed: int
    steps: int
    guidance_scale: float
    control_scale: float
    sampler: Sampler
    repaint: RepaintOptions
    output_format: OutputFormat
    pair: bool
    return_layouts: bool
    preview: bool
    client_request_id: str
    appearance: str
    def __init__(self, plane: _Optional[str] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., preset: _Optional[str] = ..., edits: _Optional[_Iterable[_Union[Edit, _Mapping]]] = ..., reference_png: _Optional[bytes] = ..., reference_label_map_png: _Optional[bytes] = ..., edit_region_png: _Optional[bytes] = ..., count: _Optional[int] = ..., seed: _Optional[int] = ..., steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., control_scale: _Optional[float] = ..., sampler: _Optional[_Union[Sampler, str]] = ..., repaint: _Optional[_Union[RepaintOptions, _Mapping]] = ..., output_format: _Optional[_Union[OutputFormat, str]] = ..., pair: _Optional[bool] = ..., return_layouts: _Optional[bool] = ..., preview: _Optional[bool] = ..., client_request_id: _Optional[str] = ..., appearance: _Optional[str] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("data", "format", "width", "height")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    format: str
    width: int
    height: int
    def __init__(self, data: _Optional[bytes] = ..., format: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class GeneratedSample(_message.Message):
    __slots__ = ("seed", "image", "abnormal_image", "label_map_png", "abnormal_label_map_png", "edit_region_png")
    SEED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ABNORMAL_IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_MAP_PNG_FIELD_NUMBER: _ClassVar[int]
    ABNORMAL_LABEL_MAP_PNG_FIELD_NUMBER: _ClassVar[int]
    EDIT_REGION_PNG_FIELD_NUMBER: _ClassVar[int]
    seed: int
    image: Image
    abnormal_image: Image
    label_map_png: bytes
    abnormal_label_map_png: bytes
    edit_region_png: bytes
    def __init__(self, seed: _Optional[int] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., abnormal_image: _Optional[_Union[Image, _Mapping]] = ..., label_map_png: _Optional[bytes] = ..., abnormal_label_map_png: _Optional[bytes] = ..., edit_region_png: _Optional[bytes] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    seconds: float
    def __init__(self, stage: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("samples", "model_name", "model_version", "model_sha256", "backend", "denoiser_calls", "timings", "seconds", "client_request_id", "synthetic", "precision", "appearance", "request_json")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DENOISER_CALLS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    APPEARANCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[GeneratedSample]
    model_name: str
    model_version: str
    model_sha256: str
    backend: str
    denoiser_calls: int
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    seconds: float
    client_request_id: str
    synthetic: bool
    precision: str
    appearance: str
    request_json: str
    def __init__(self, samples: _Optional[_Iterable[_Union[GeneratedSample, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., model_sha256: _Optional[str] = ..., backend: _Optional[str] = ..., denoiser_calls: _Optional[int] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., seconds: _Optional[float] = ..., client_request_id: _Optional[str] = ..., synthetic: _Optional[bool] = ..., precision: _Optional[str] = ..., appearance: _Optional[str] = ..., request_json: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "phase", "stage", "timestep", "preview_png")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTEP_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_PNG_FIELD_NUMBER: _ClassVar[int]
    step: int
    phase: str
    stage: int
    timestep: int
    preview_png: bytes
    def __init__(self, step: _Optional[int] = ..., phase: _Optional[str] = ..., stage: _Optional[int] = ..., timestep: _Optional[int] = ..., preview_png: _Optional[bytes] = ...) -> None: ...

class GenerateEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: GenerateResponse
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[GenerateResponse, _Mapping]] = ...) -> None: ...

class ListPlanesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StructureInfo(_message.Message):
    __slots__ = ("id", "name", "display")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    display: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., display: _Optional[str] = ...) -> None: ...

class PlaneInfo(_message.Message):
    __slots__ = ("code", "name", "description", "structures", "presets")
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STRUCTURES_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    code: str
    name: str
    description: str
    structures: _containers.RepeatedScalarFieldContainer[str]
    presets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., structures: _Optional[_Iterable[str]] = ..., presets: _Optional[_Iterable[str]] = ...) -> None: ...

class PresetInfo(_message.Message):
    __slots__ = ("name", "meaning", "planes", "changes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEANING_FIELD_NUMBER: _ClassVar[int]
    PLANES_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    meaning: str
    planes: _containers.RepeatedScalarFieldContainer[str]
    changes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., meaning: _Optional[str] = ..., planes: _Optional[_Iterable[str]] = ..., changes: _Optional[_Iterable[str]] = ...) -> None: ...

class ListPlanesResponse(_message.Message):
    __slots__ = ("structures", "planes", "presets", "vocabulary_json")
    STRUCTURES_FIELD_NUMBER: _ClassVar[int]
    PLANES_FIELD_NUMBER: _ClassVar[int]
    PRESETS_FIELD_NUMBER: _ClassVar[int]
    VOCABULARY_JSON_FIELD_NUMBER: _ClassVar[int]
    structures: _containers.RepeatedCompositeFieldContainer[StructureInfo]
    planes: _containers.RepeatedCompositeFieldContainer[PlaneInfo]
    presets: _containers.RepeatedCompositeFieldContainer[PresetInfo]
    vocabulary_json: str
    def __init__(self, structures: _Optional[_Iterable[_Union[StructureInfo, _Mapping]]] = ..., planes: _Optional[_Iterable[_Union[PlaneInfo, _Mapping]]] = ..., presets: _Optional[_Iterable[_Union[PresetInfo, _Mapping]]] = ..., vocabulary_json: _Optional[str] = ...) -> None: ...

class RenderLayoutRequest(_message.Message):
    __slots__ = ("plane", "layout", "preset", "edits", "size", "seed")
    PLANE_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    plane: str
    layout: Layout
    preset: str
    edits: _containers.RepeatedCompositeFieldContainer[Edit]
    size: int
    seed: int
    def __init__(self, plane: _Optional[str] = ..., layout: _Optional[_Union[Layout, _Mapping]] = ..., preset: _Optional[str] = ..., edits: _Optional[_Iterable[_Union[Edit, _Mapping]]] = ..., size: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class RenderLayoutResponse(_message.Message):
    __slots__ = ("label_map_png", "colour_png", "structures", "field_mm")
    LABEL_MAP_PNG_FIELD_NUMBER: _ClassVar[int]
    COLOUR_PNG_FIELD_NUMBER: _ClassVar[int]
    STRUCTURES_FIELD_NUMBER: _ClassVar[int]
    FIELD_MM_FIELD_NUMBER: _ClassVar[int]
    label_map_png: bytes
    colour_png: bytes
    structures: StructureList
    field_mm: float
    def __init__(self, label_map_png: _Optional[bytes] = ..., colour_png: _Optional[bytes] = ..., structures: _Optional[_Union[StructureList, _Mapping]] = ..., field_mm: _Optional[float] = ...) -> None: ...
