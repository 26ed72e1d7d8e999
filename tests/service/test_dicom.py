"""DICOM output end to end: conformance (dciodvfy), one study and series per counterfactual
pair with the twin referencing its source and naming its edit, a synthetic patient per
output, the model's real version, and every "this image is synthetic" marking."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pydicom
import pytest

from fetalflex import SYNTHETIC_NOTICE
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.server import running_server

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def stub(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[pb_grpc.FetalFlexStub]:
    os.environ["FETALFLEX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    settings = ServiceSettings(port=0, metrics_port=0, weights=tiny_weights, max_count=4,
                               max_steps=10, grace_s=2)
    with running_server(settings, start_timeout_s=60, stop_timeout_s=30) as srv, \
            grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        yield pb_grpc.FetalFlexStub(ch)


def _pairs(stub: pb_grpc.FetalFlexStub, **fields: object
           ) -> tuple[pb.GenerateResponse, list[tuple[pydicom.Dataset, pydicom.Dataset]]]:
    r = stub.Generate(pb.GenerateRequest(plane="TV", pair=True, steps=2,
                                         output_format=pb.OUTPUT_FORMAT_DICOM, **fields),
                      timeout=120)
    return r, [(pydicom.dcmread(io.BytesIO(s.image.data)),
                pydicom.dcmread(io.BytesIO(s.abnormal_image.data))) for s in r.samples]


def test_a_pair_is_one_study_and_series_and_the_twin_names_its_source_and_edit(
        stub: pb_grpc.FetalFlexStub) -> None:
    r, pairs = _pairs(stub, preset="absent_csp", count=2)
    assert len(pairs) == 2
    for src, twin in pairs:
        assert twin.StudyInstanceUID == src.StudyInstanceUID
        assert twin.SeriesInstanceUID == src.SeriesInstanceUID
        assert twin.PatientID == src.PatientID
        assert (int(src.InstanceNumber), int(twin.InstanceNumber)) == (1, 2)
        assert twin.SOPInstanceUID != src.SOPInstanceUID
        ref = twin.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == src.SOPClassUID
        assert "SourceImageSequence" not in src
        assert "preset absent_csp" in twin.DerivationDescription
        assert "preset" not in src.DerivationDescription
    (a, _), (b, _) = pairs
    assert a.StudyInstanceUID != b.StudyInstanceUID
    assert a.PatientID != b.PatientID  # each output its own synthetic patient
    assert r.samples[0].seed != r.samples[1].seed


def test_an_edit_list_is_summarised_in_the_twin(stub: pb_grpc.FetalFlexStub) -> None:
    edit = '{"op": "remove", "structure": "cavum_septi_pellucidi"}'
    _, [(_, twin)] = _pairs(stub, edits=[pb.Edit(json=edit)])
    assert '{"op":"remove","structure":"cavum_septi_pellucidi"}' in twin.DerivationDescription


def test_synthetic_identity_markings_and_model_version(stub: pb_grpc.FetalFlexStub) -> None:
    r, pairs = _pairs(stub, preset="absent_csp")
    assert len(r.model_sha256) == 64 and r.model_version == r.model_sha256[:12]
    assert r.precision == "fp32"
    for ds in pairs[0]:
        assert ds.PatientID.startswith("SYN-") and ds.PatientID != "SYNTHETIC"
        assert "SYNTHETIC" in str(ds.PatientName)
        assert ds.ConversionType == "SYN" and ds.Modality == "US"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.ImageComments == SYNTHETIC_NOTICE
        assert "not for diagnosis" in ds.DerivationDescription
        assert f"fetalflex-denoiser {r.model_version}" in ds.DerivationDescription
        assert "denoiser " + r.model_version in " ".join(ds.SoftwareVersions)
        assert ds.PatientBirthDate == "" and ds.PatientSex == ""


def test_plain_samples_are_single_instances(stub: pb_grpc.FetalFlexStub) -> None:
    r = stub.Generate(pb.GenerateRequest(plane="FL", steps=2, count=2,
                                         output_format=pb.OUTPUT_FORMAT_DICOM), timeout=120)
    dss = [pydicom.dcmread(io.BytesIO(s.image.data)) for s in r.samples]
    assert [int(d.InstanceNumber) for d in dss] == [1, 1]
    assert len({d.StudyInstanceUID for d in dss}) == 2 and not r.samples[0].abnormal_image.data


def _dciodvfy(path: Path) -> list[str]:
    """dciodvfy's error and warning lines (it prints them on stderr)."""
    assert DCIODVFY is not None
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (out.stdout + out.stderr).splitlines()
            if ln.startswith(("Error", "Warning"))]


def test_dciodvfy_finds_nothing(stub: pb_grpc.FetalFlexStub, tmp_path: Path) -> None:
    if DCIODVFY is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is missing: CI must install the Debian package dicom3tools")
        pytest.skip("dciodvfy not installed (Debian package dicom3tools)")
    r = stub.Generate(pb.GenerateRequest(plane="TV", pair=True, steps=2, preset="absent_csp",
                                         output_format=pb.OUTPUT_FORMAT_DICOM), timeout=120)
    for name, data in (("source", r.samples[0].image.data),
                       ("twin", r.samples[0].abnormal_image.data)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(data)  # the bytes as served
        assert _dciodvfy(path) == [], name
