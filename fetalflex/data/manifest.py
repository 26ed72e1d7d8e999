"""The data set manifest: JSON lines, one (image, label map) pair per line.

Real users write the same format for their own data. Paths are relative to the
manifest's folder (or absolute). Fields:

``image`` (str), ``label_map`` (str), ``plane`` (str, a plane code),
``ga_weeks`` (float, optional), ``seed`` (int, optional), ``field_mm`` (float, optional),
``preset`` (str, optional: the anomaly preset of an abnormal phantom, evaluation only),
``structures`` (optional: the structure list it was rasterized from),
``appearance`` (``phantom`` (default) or ``real``: which look the image has),
``subject`` (optional: the subject / patient / exam id; all its frames stay on one side of a
split), ``split`` (optional: ``train`` or ``val``; training reads ``train`` and unsplit
records, never ``val``), ``source`` (optional: the data set it was imported from),
``hc_mm`` (optional: the head circumference the data set gives, mm).

Label maps may leave pixels unlabelled (id 255, ``structures.UNLABELLED``): partial anatomy,
e.g. a real scan with only its head outline labelled.

Loading validates every line and reports ``manifest.jsonl:LINE: FIELD: reason``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fetalflex.anatomy.biometry import GA_ACCEPTED_MAX, GA_ACCEPTED_MIN
from fetalflex.anatomy.layout import DEFAULT_FIELD_MM, FIELD_MM_MAX, LabelMap, Layout
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.anatomy.structures import NUM_LABELS, UNLABELLED
from fetalflex.appearance import Appearance
from fetalflex.errors import field_errors
from fetalflex.io.png import read_gray, read_label_map


class ManifestError(ValueError):
    pass


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = Field(min_length=1)
    label_map: str = Field(min_length=1)
    plane: str
    ga_weeks: float | None = Field(default=None, ge=GA_ACCEPTED_MIN, le=GA_ACCEPTED_MAX)
    seed: int | None = None
    field_mm: float | None = Field(default=None, gt=0, le=FIELD_MM_MAX)
    preset: str | None = None
    structures: list[dict[str, object]] | None = None
    appearance: Appearance = "phantom"
    subject: str | None = Field(default=None, min_length=1)
    split: Literal["train", "val"] | None = None
    source: str | None = None
    hc_mm: float | None = Field(default=None, gt=0)  # the data set's head circumference

    @field_validator("plane")
    @classmethod
    def _plane(cls, v: str) -> str:
        get_plane(v)
        return v

    @property
    def abnormal(self) -> bool:
        return self.preset is not None

    def layout(self, label_map: LabelMap) -> Layout:
        """This record's label map as a layout (field of view: the default when unset)."""
        return Layout(self.plane, label_map, self.field_mm or DEFAULT_FIELD_MM, self.ga_weeks)


def write_manifest(path: Path, records: Iterable[Record]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json(exclude_none=True) + "\n")
    tmp.replace(path)


def _where(path: Path, line: int) -> str:
    return f"{path.name}:{line}"


def read_manifest(path: Path, check_files: bool = True) -> list[Record]:
    """Parse and validate a manifest; raise ManifestError naming the line and the field."""
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    records: list[Record] = []
    root = path.parent
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{_where(path, n)}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ManifestError(f"{_where(path, n)}: each line must be a JSON object")
            try:
                rec = Record.model_validate(obj)
            except ValidationError as exc:
                raise ManifestError(f"{_where(path, n)}: "
                                    f"{field_errors(exc, top='line')[0]}") from None
            if check_files:
                _check_files(root, rec, _where(path, n))
            records.append(rec)
    if not records:
        raise ManifestError(f"{path}: manifest has no records")
    return records


def resolve(root: Path, p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else root / q


def _check_files(root: Path, rec: Record, where: str) -> None:
    img_p, lab_p = resolve(root, rec.image), resolve(root, rec.label_map)
    for field, p in (("image", img_p), ("label_map", lab_p)):
        if not p.is_file():
            raise ManifestError(f"{where}: {field}: file not found: {p}")
    try:
        img = read_gray(img_p)
    except Exception as exc:  # noqa: BLE001 - any decode failure is a bad file
        raise ManifestError(f"{where}: image: cannot read {img_p}: {exc}") from None
    try:
        lab = read_label_map(lab_p)
    except Exception as exc:  # noqa: BLE001
        raise ManifestError(f"{where}: label_map: cannot read {lab_p}: {exc}") from None
    if img.shape != lab.shape:
        raise ManifestError(
            f"{where}: label_map: size {lab.shape[1]}x{lab.shape[0]} does not match image "
            f"size {img.shape[1]}x{img.shape[0]}"
        )
    bad = sorted(set(np.unique(lab).tolist()) - set(range(NUM_LABELS)) - {UNLABELLED})
    if bad:
        raise ManifestError(f"{where}: label_map: unknown label ids {bad} "
                            f"(known ids are 0..{NUM_LABELS - 1}, and {UNLABELLED} = unlabelled)")
    allowed = set(get_plane(rec.plane).label_ids) | {UNLABELLED}
    foreign = sorted(set(np.unique(lab).tolist()) - allowed)
    if foreign:
        raise ManifestError(f"{where}: label_map: label ids {foreign} are not part of plane "
                            f"{rec.plane}")
