"""The data set spec: what to make, in one YAML or JSON file, validated before any work.

Example (docs/DATASETS.md has the reference)::

    name: heads-and-hearts
    seed: 1000                      # seed base: every item's seed derives from it
    ga_weeks: [20, 30]              # gestational-age range (default: the template's own)
    pairs: true                     # abnormal items as counterfactual pairs
    generation: {steps: 10}         # request fields; unset ones keep the schema's defaults
    formats: [png, dicom, npy]      # PNG always; DICOM and raw .npy optional
    planes:
      TV:
        count: 40                   # normal images
        presets: {ventriculomegaly: 10, hydrocephalus: 10}
      AC:
        count: 20
        edits:                      # named edit lists, like presets
          big_stomach: {count: 5, edits: [{op: scale, structures: [stomach], factor: 1.6}]}

Errors name the spec's key and the reason, one per line: ``planes.TV.count: must be >= 0``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fetalflex.anatomy.edits import Edit
from fetalflex.anatomy.planes import PLANE_CODES, canonical_code
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.presets import BY_NAME as PRESETS
from fetalflex.errors import field_errors
from fetalflex.request import GenerationRequest

Format = Literal["png", "dicom", "npy"]
FORMATS: Final[tuple[Format, ...]] = ("png", "dicom", "npy")
# Request fields the spec's ``generation`` section may set; the others are per item (plane,
# seed, preset, edits, pair, ga_weeks come from the spec's own keys; n is 1 per item).
GENERATION_KEYS: Final = ("steps", "guidance", "control_scale", "sampler", "repaint",
                          "appearance")
NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_]{0,47}$"
CONTACT_SHEET_MAX: Final = 120
# DICOM files carry this study date unless the spec sets another: a fixed value, so that a
# rerun, a resumed run and every shard write the same bytes. It is not when they were made.
DEFAULT_DICOM_DATETIME: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

Count = Annotated[int, Field(ge=0)]
GaRange = tuple[float, float]


class SpecError(ValueError):
    """Spec problems, one ``key: reason`` line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class EditList(BaseModel):
    """A named edit list: ``count`` items whose layouts get ``edits``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    count: Count
    edits: tuple[Edit, ...] = Field(min_length=1)


class PlaneSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    count: Count = 0  # normal images
    presets: dict[str, Count] = Field(default_factory=dict)
    edits: dict[str, EditList] = Field(default_factory=dict)
    ga_weeks: GaRange | None = None  # overrides the spec's
    pairs: bool | None = None  # overrides the spec's

    @field_validator("presets", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        """Preset names are case-insensitive, like everywhere else."""
        return {k.strip().lower() if isinstance(k, str) else k: n
                for k, n in v.items()} if isinstance(v, dict) else v

    @property
    def items(self) -> int:
        return self.count + sum(self.presets.values()) + sum(e.count for e in
                                                             self.edits.values())


class DatasetSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(default="fetalflex-dataset", min_length=1, max_length=64,
                      pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(default=0, ge=0)
    planes: dict[str, PlaneSpec] = Field(min_length=1)
    ga_weeks: GaRange | None = None
    pairs: bool = False
    generation: dict[str, Any] = Field(default_factory=dict)
    formats: tuple[Format, ...] = ("png",)
    contact_sheet: int = Field(default=24, ge=0, le=CONTACT_SHEET_MAX)
    dicom_datetime: dt.datetime = DEFAULT_DICOM_DATETIME

    @field_validator("planes", mode="before")
    @classmethod
    def _plane_codes(cls, v: object) -> object:
        """Plane keys are case-insensitive; the canonical code is kept (unknown ones are
        kept as given and reported by ``check``)."""
        if not isinstance(v, dict):
            return v
        out: dict[object, object] = {}
        for k, p in v.items():
            code = canonical_code(k) if isinstance(k, str) else k
            if code in out:
                raise ValueError(f"plane {code} is given twice")
            out[code] = p
        return out

    @field_validator("formats", mode="after")
    @classmethod
    def _png_always(cls, v: tuple[Format, ...]) -> tuple[Format, ...]:
        return tuple(f for f in FORMATS if f == "png" or f in v)

    @property
    def total(self) -> int:
        return sum(p.items for p in self.planes.values())

    def plane_order(self) -> list[str]:
        """The spec's planes in the project's plane order (not the file's key order)."""
        return [c for c in PLANE_CODES if c in self.planes]

    def sha256(self) -> str:
        """Content hash of the normalized spec (key order and spelling do not matter)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def request(self, plane: str, **fields: Any) -> GenerationRequest:
        """The request of one item: the spec's generation options, unset ones left to the
        request schema (its defaults are never copied here)."""
        return GenerationRequest(plane=plane, n=1, **self.generation, **fields)


# ---------------------------------------------------------------- errors


def error_lines(exc: ValidationError, prefix: str = "") -> list[str]:
    return [str(e) for e in field_errors(exc, f"{prefix}." if prefix else "", top="spec")]


def _request_errors(key: str, plane: str, fields: dict[str, Any]) -> list[str]:
    """Check request fields against the request schema; errors named under ``key``."""
    try:
        GenerationRequest(plane=plane, **fields)
    except ValidationError as exc:
        return error_lines(exc, key)
    return []


def _ga_errors(key: str, rng: GaRange | None, plane: str) -> list[str]:
    if rng is None:
        return []
    out: list[str] = []
    for i, v in enumerate(rng):
        out += [f"{key}.{i}: {line.partition(': ')[2]}"
                for line in _request_errors("", plane, {"ga_weeks": v})]
    if not out and rng[0] > rng[1]:
        out.append(f"{key}: the range's start {rng[0]:g} is above its end {rng[1]:g}")
    return out


def check(spec: DatasetSpec) -> list[str]:
    """What pydantic cannot see: plane, preset and edit names, the request schema's bounds."""
    import re

    out: list[str] = []
    first = next((c for c in spec.planes if c in PLANE_CODES), PLANE_CODES[0])
    for k in spec.generation:
        if k not in GENERATION_KEYS:
            why = ("set per item by the spec's own keys (seed, planes, presets, edits, pairs, "
                   "ga_weeks)" if k in GenerationRequest.model_fields else "unknown key")
            out.append(f"generation.{k}: {why}; allowed: {', '.join(GENERATION_KEYS)}")
    if not out:
        out += _request_errors("generation", first, dict(spec.generation))
    out += _ga_errors("ga_weeks", spec.ga_weeks, first)
    for code, p in spec.planes.items():
        key = f"planes.{code}"
        try:
            pl = get_plane(code)
        except ValueError:
            out.append(f"{key}: unknown plane; known planes: {', '.join(PLANE_CODES)}")
            continue
        out += _ga_errors(f"{key}.ga_weeks", p.ga_weeks, code)
        for name in p.presets:
            pr = PRESETS.get(name)
            if pr is None:
                out.append(f"{key}.presets.{name}: unknown preset; known presets: "
                           f"{', '.join(PRESETS)}")
            elif code not in pr.planes:
                out.append(f"{key}.presets.{name}: applies to plane(s) "
                           f"{', '.join(pr.planes)}, not to plane {code}")
        for name, el in p.edits.items():
            if not re.fullmatch(NAME_PATTERN, name):
                out.append(f"{key}.edits.{name}: a name of lower-case letters, digits and _ "
                           f"(at most 48)")
            for i, e in enumerate(el.edits):
                try:
                    e.check_plane(pl)
                except ValueError as exc:
                    out.append(f"{key}.edits.{name}.edits.{i}: {exc}")
    if not out and spec.total == 0:
        out.append("planes: no items (every count is 0)")
    return out


def parse_spec(data: object, source: str = "spec") -> DatasetSpec:
    """A spec from parsed YAML/JSON; raises SpecError with one ``key: reason`` per line."""
    if not isinstance(data, dict):
        raise SpecError([f"{source}: the spec must be a mapping of keys (name, seed, planes, "
                         f"...)"])
    try:
        spec = DatasetSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(error_lines(exc)) from None
    problems = check(spec)
    if problems:
        raise SpecError(problems)
    return spec


def load_spec(path: Path) -> DatasetSpec:
    """Read and validate a ``.yaml``/``.yml`` or ``.json`` spec file."""
    if not path.is_file():
        raise SpecError([f"spec: {path}: no such file"])
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError([f"spec: {path.name}:{exc.lineno}: not valid JSON ({exc.msg})"]
                            ) from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise SpecError([f"spec: {path.name}{where}: not valid YAML "
                             f"({getattr(exc, 'problem', None) or exc})"]) from None
    else:
        raise SpecError([f"spec: {path.name}: a spec is a .yaml, .yml or .json file"])
    return parse_spec(data)
