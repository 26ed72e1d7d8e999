"""The output record (``fetalflex.record``): one typed sidecar written and read by every
writer; errors that name the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fetalflex.record import ModelFacts, OutputRecord, SampleFiles, read_record, write_record
from fetalflex.request import GenerationRequest


def _record(**kw: object) -> OutputRecord:
    return OutputRecord(model=ModelFacts(id="m", sha256="ab" * 32, backend="embedded"),
                        request=GenerationRequest(plane="tv", preset="ventriculomegaly"),
                        denoiser_calls=12, denoiser_calls_per_sample=12.0, seconds=0.5,
                        samples=[SampleFiles(seed=0, image="tv_000.png")], **kw)


def test_round_trip_keeps_every_request_field(tmp_path: Path) -> None:
    path = write_record(tmp_path, "tv", _record())
    data = json.loads(path.read_text())
    assert data["synthetic"] is True and "image_format" not in data  # png: the default
    assert data["request"]["plane"] == "TV" and "ga_weeks" in data["request"]  # said, None
    assert "abnormal_image" not in data["samples"][0]  # absent files are left out
    back = read_record(path)
    assert back == _record()
    partial = _record(**OutputRecord.provenance(True), image_format="dicom")
    assert json.loads(partial.to_json())["synthetic"] == "partial"


def test_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sidecar: .*nothing.json not found"):
        read_record(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="is not JSON"):
        read_record(tmp_path / "bad.json")
    old_client = {"synthetic": True, "model": "fetalflex-denoiser", "samples": []}
    (tmp_path / "old.json").write_text(json.dumps(old_client))
    with pytest.raises(ValueError, match=r"old.json is not a FetalFlex output record: model"):
        read_record(tmp_path / "old.json")
    data = json.loads(_record().to_json())
    data["request"]["steps"] = 0
    (tmp_path / "steps.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"request.steps: must be >= 1, got 0"):
        read_record(tmp_path / "steps.json")
