"""The output record: the JSON sidecar ``PREFIX.json`` beside every result's files.

One typed model, written and read here only, by every way a result leaves FetalFlex:
``fetalflex generate``, the Python API (``Output.save``), the gRPC client (``fetalflex
client``) and ``fetalflex reproduce``. It holds what made the result (model, weights hash,
backend, precision, the request with every default filled in, the inputs that are not in
the request), whose pixels the images are (provenance), how long it took, and the files
of each sample (named by ``io.naming``). A record is enough to remake its result byte
for byte with the same weights and precision: ``fetalflex reproduce PREFIX.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fetalflex.about import SYNTHETIC_NOTICE, USER_PIXELS_NOTICE, __version__
from fetalflex.errors import field_errors
from fetalflex.io.atomic import atomic_write_text
from fetalflex.request import DEFAULT_PRECISION, GenerationRequest, Precision

ImageFormat = Literal["png", "dicom"]
# Files of the generated images (label maps are always PNG) ...
OUTPUT_FORMATS: tuple[ImageFormat, ...] = ("png", "dicom")
# ... and of a served result (the client may also ask for raw float32 pixels).
RecordFormat = Literal["png", "dicom", "raw"]


class ModelFacts(BaseModel):
    """The weights and the arithmetic that made the result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    sha256: str
    backend: str
    precision: Precision = DEFAULT_PRECISION
    config: dict[str, Any] | None = None  # the denoiser config (local results)
    version: str | None = None            # the served model's version (served results)


class SampleFiles(BaseModel):
    """One sample's seed, files (names beside the record) and report."""

    model_config = ConfigDict(extra="forbid")

    seed: int
    image: str | None = None
    label_map: str | None = None
    layout_picture: str | None = None
    report: dict[str, Any] | None = None
    abnormal_image: str | None = None
    abnormal_label_map: str | None = None
    abnormal_layout_picture: str | None = None
    region: str | None = None
    region_pixels: int | None = None


class Served(BaseModel):
    """Where a served result came from (records written by the gRPC client)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str
    client_request_id: str = ""


class Recipe(BaseModel):
    """What remakes a result: the model, the request and the inputs not in it. Every record
    holds one: output records and the data-set item records (``dataset/writer.py``), which
    ``fetalflex reproduce`` reads alike."""

    model_config = ConfigDict(extra="ignore")

    model: ModelFacts
    request: GenerationRequest
    inputs: dict[str, Any] = Field(default_factory=dict)


class OutputRecord(Recipe):
    """The sidecar. ``synthetic`` is ``"partial"`` when the images hold a user's pixels
    (a repaint of ``--reference``); ``inputs`` names the given layout / reference files
    saved beside the record (``fetalflex reproduce`` reads them back)."""

    model_config = ConfigDict(extra="forbid")

    synthetic: bool | Literal["partial"] = True
    notice: str = SYNTHETIC_NOTICE
    software: str = f"fetalflex {__version__}"
    denoiser_calls: int = Field(ge=0)
    denoiser_calls_per_sample: float = Field(ge=0)
    seconds: float = Field(ge=0)
    timings: dict[str, float] = Field(default_factory=dict)
    samples: list[SampleFiles]
    image_format: RecordFormat = "png"
    served: Served | None = None

    @classmethod
    def provenance(cls, user_pixels: bool) -> dict[str, Any]:
        """The ``synthetic`` and ``notice`` fields for a result with or without a user's
        pixels."""
        return ({"synthetic": "partial", "notice": USER_PIXELS_NOTICE} if user_pixels
                else {"synthetic": True, "notice": SYNTHETIC_NOTICE})

    def to_json(self) -> str:
        data = json.loads(self.model_dump_json(exclude_none=True))
        data["request"] = json.loads(self.request.model_dump_json())  # every field, said
        if data.get("image_format") == "png":
            del data["image_format"]  # the default, as the records before v0.9 were written
        return json.dumps(data, indent=2) + "\n"


R = TypeVar("R", bound=Recipe)


def record_path(out: Path, prefix: str) -> Path:
    return out / f"{prefix}.json"


def write_record(out: Path, prefix: str, record: OutputRecord) -> Path:
    """``out/PREFIX.json``, written atomically; returns its path."""
    path = record_path(out, prefix)
    atomic_write_text(path, record.to_json())
    return path


def read_record(path: Path) -> OutputRecord:
    """An output record written by any of the writers; a clear error naming the file and
    the field when it is not one."""
    return _read(path, OutputRecord)


def read_recipe(path: Path) -> Recipe:
    """The recipe of an output record or of a data-set item record."""
    return _read(path, Recipe)


def _read(path: Path, kind: type[R]) -> R:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"sidecar: {path} not found (the .json file written beside the "
                         f"images by generate, the Python API or `fetalflex client`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"sidecar: {path} is not JSON ({exc})") from None
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = field_errors(exc, top="(top level)")[0]
        raise ValueError(f"sidecar: {path} is not a FetalFlex output record: {first} "
                         f"(records are written by generate, the Python API, "
                         f"`fetalflex client` and `fetalflex dataset` of this version)") from None
