"""The gRPC service end to end: a real server on loopback, a real client."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pydicom
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from fetalflex.anatomy.structures import NUM_LABELS, label_id
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.config import ServiceSettings
from service.server import Server, running_server


class Running:
    """A Server on its own event loop in a background thread (service.server's helper)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._ctx = running_server(settings, start_timeout_s=60, stop_timeout_s=30)
        self.server: Server = self._ctx.__enter__()
        self.target = f"127.0.0.1:{self.server.port}"

    @property
    def calls(self) -> int:
        return int(self.server.backend.call.stats.calls)  # type: ignore[union-attr]

    def stop(self) -> None:
        self._ctx.__exit__(None, None, None)


@pytest.fixture(scope="module")
def server(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    import os

    os.environ["FETALFLEX_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    r = Running(ServiceSettings(port=0, metrics_port=0, backend="embedded",
                                weights=tiny_weights, max_concurrent=2, max_queued=1,
                                max_count=4, max_steps=50, grace_s=2))
    yield r
    r.stop()


@pytest.fixture()
def stub(server: Running) -> Iterator[pb_grpc.FetalFlexStub]:
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.FetalFlexStub(ch)


def _png_label(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_planes(server: Running, stub: pb_grpc.FetalFlexStub) -> None:
    with grpc.insecure_channel(server.target) as ch:
        h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(
            service="fetalflex.v1.FetalFlex"))
    assert h.status == health_pb2.HealthCheckResponse.SERVING
    r = stub.ListPlanes(pb.ListPlanesRequest())
    assert [p.code for p in r.planes] == ["TV", "TT", "TC", "AC", "4CH", "FL", "LIP"]
    assert len(r.structures) == NUM_LABELS and json.loads(r.vocabulary_json)["version"] == 1


def test_render_layout_with_preset(stub: pb_grpc.FetalFlexStub) -> None:
    normal = stub.RenderLayout(pb.RenderLayoutRequest(plane="TV", seed=4, size=64))
    gone = stub.RenderLayout(pb.RenderLayoutRequest(plane="TV", seed=4, size=64,
                                                    preset="absent_csp"))
    lm = np.asarray(Image.open(io.BytesIO(normal.label_map_png)))
    lm2 = np.asarray(Image.open(io.BytesIO(gone.label_map_png)))
    csp = label_id("cavum_septi_pellucidi")  # what absent_csp removes
    assert (lm == csp).sum() > 0 and (lm2 == csp).sum() == 0
    assert any(s.structure == "skull" for s in normal.structures.shapes)
    # the list says what its shapes are painted over and the sector: fed back, it draws
    # the same kind of layout
    assert (normal.structures.fill, normal.structures.sector) == ("amniotic_fluid", "standard")


def test_generate_pair_png(stub: pb_grpc.FetalFlexStub) -> None:
    r = stub.Generate(pb.GenerateRequest(plane="LIP", preset="cleft_lip", pair=True, steps=3,
                                         return_layouts=True, client_request_id="abc"))
    assert r.synthetic and r.client_request_id == "abc" and r.denoiser_calls > 3
    s = r.samples[0]
    img = Image.open(io.BytesIO(s.image.data))
    assert img.text["Synthetic"] == "true" and img.size == (32, 32)
    twin = np.asarray(Image.open(io.BytesIO(s.abnormal_image.data)))
    region = np.asarray(Image.open(io.BytesIO(s.edit_region_png))) > 0
    assert np.array_equal(twin[~region], np.asarray(img)[~region])
    assert s.label_map_png and s.abnormal_label_map_png


def test_planes_are_case_insensitive_and_partial_layouts_are_served(
        stub: pb_grpc.FetalFlexStub) -> None:
    lm = np.full((32, 32), 255)  # nothing labelled but a skull ring
    yy, xx = np.mgrid[0:32, 0:32]
    r = np.hypot(xx - 16, yy - 16)
    lm[(r > 8) & (r <= 10)] = 3
    resp = stub.Generate(pb.GenerateRequest(plane="tt", steps=2, appearance="Phantom",
                                            layout=pb.Layout(label_map_png=_png_label(lm))))
    assert resp.appearance == "phantom" and len(resp.samples) == 1
    ring = pb.Shape(structure="skull", kind="ring", center_x=0.5, center_y=0.5, axis_x=0.3,
                    axis_y=0.2)
    resp = stub.Generate(pb.GenerateRequest(plane="TT", steps=2, return_layouts=True,
                                            layout=pb.Layout(structures=pb.StructureList(
                                                shapes=[ring], fill="unlabelled"))))
    lab = np.asarray(Image.open(io.BytesIO(resp.samples[0].label_map_png)))
    assert set(np.unique(lab).tolist()) == {0, 3, 255}  # the standard sector, the ring
    bare = stub.Generate(pb.GenerateRequest(plane="TT", steps=2, return_layouts=True,
                                            layout=pb.Layout(structures=pb.StructureList(
                                                shapes=[ring], fill="unlabelled",
                                                sector="none"))))
    lab = np.asarray(Image.open(io.BytesIO(bare.samples[0].label_map_png)))
    assert set(np.unique(lab).tolist()) == {3, 255}  # the ring, and nothing else said
    with pytest.raises(grpc.RpcError) as err:
        stub.Generate(pb.GenerateRequest(plane="TT", steps=2, layout=pb.Layout(
            structures=pb.StructureList(shapes=[ring], sector="fan"))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "layout.structures" in (err.value.details() or "")


def test_a_repaint_of_the_callers_image_says_whose_pixels_it_holds(
        stub: pb_grpc.FetalFlexStub) -> None:
    first = stub.Generate(pb.GenerateRequest(plane="TV", steps=2, return_layouts=True))
    ref = pb.GenerateRequest(plane="TV", preset="hydrocephalus", steps=2,
                             reference_png=first.samples[0].image.data,
                             reference_label_map_png=first.samples[0].label_map_png)
    resp = stub.Generate(ref)
    assert first.synthetic and not resp.synthetic  # the response says it too
    s = resp.samples[0]
    assert Image.open(io.BytesIO(s.image.data)).text["Synthetic"] == "false"
    twin = Image.open(io.BytesIO(s.abnormal_image.data)).text
    region = np.asarray(Image.open(io.BytesIO(s.edit_region_png))) > 0
    assert twin["Synthetic"] == "partial" and twin["GeneratedRegion"] == "edit_region_png"
    assert int(twin["GeneratedPixels"]) == int(region.sum()) > 0
    ref.output_format = pb.OUTPUT_FORMAT_DICOM
    with pytest.raises(grpc.RpcError) as ei:
        stub.Generate(ref)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output_format: a repaint of reference_png holds the caller's pixels" in \
        ei.value.details()


def test_generate_dicom_and_raw(stub: pb_grpc.FetalFlexStub) -> None:
    r = stub.Generate(pb.GenerateRequest(plane="FL", steps=2, count=2,
                                         output_format=pb.OUTPUT_FORMAT_DICOM))
    uids = set()
    for s in r.samples:
        ds = pydicom.dcmread(io.BytesIO(s.image.data))
        assert ds.Modality == "US" and ds.ConversionType == "SYN"
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and ds.BurnedInAnnotation == "NO"
        assert "fetalflex-denoiser" in ds.DerivationDescription
        assert ds.pixel_array.shape == (32, 32)
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == 2
    raw = stub.Generate(pb.GenerateRequest(plane="FL", steps=2,
                                           output_format=pb.OUTPUT_FORMAT_RAW_FLOAT32))
    arr = np.frombuffer(raw.samples[0].image.data, "<f4").reshape(32, 32)
    assert arr.min() >= -1.0 and arr.max() <= 1.0


def test_stream_progress_then_result(stub: pb_grpc.FetalFlexStub) -> None:
    events = list(stub.GenerateStream(pb.GenerateRequest(plane="AC", steps=4, preview=True)))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["progress"] * 4 + ["result"]
    assert [e.progress.step for e in events[:4]] == [1, 2, 3, 4]
    assert Image.open(io.BytesIO(events[0].progress.preview_png)).size == (32, 32)


BAD = [
    (dict(plane="XX"), "plane"),
    (dict(plane="TV", preset="cleft_lip"), "preset"),
    (dict(plane="TV", steps=51), "steps"),
    (dict(plane="TV", steps=0), "steps: must be >= 1, got 0"),
    (dict(plane="TV", count=5), "count"),
    (dict(plane="TV", guidance_scale=float("nan")), "guidance_scale"),
    (dict(plane="TV", edits=[pb.Edit(json='{"op": "scale"')]), "edits[0].json"),
    (dict(plane="TV", edits=[pb.Edit(json='{"op": "remove", "structure": "femur"}')]),
     "femur"),
    (dict(plane="TV", layout=pb.Layout(label_map_png=b"not a png")), "layout.label_map_png"),
    (dict(plane="TV", layout=pb.Layout(label_map_png=_png_label(np.zeros((16, 16))))),
     "the model needs 32x32"),
    (dict(plane="TV", layout=pb.Layout(label_map_png=_png_label(np.full((32, 32), 99)))),
     "unknown label ids [99]"),
    (dict(plane="FL", layout=pb.Layout(label_map_png=_png_label(np.full((32, 32), 3)))),
     "not part of plane FL"),
    (dict(plane="TV", pair=True), "pair"),
    (dict(plane="TV", appearance="real"), "appearance: 'real' is not served by these weights"),
    (dict(plane="TV", appearance="cartoon"), "appearance"),
]


@pytest.mark.parametrize(("fields", "needle"), BAD, ids=[b[1] for b in BAD])
def test_invalid_requests_name_the_field_and_cost_nothing(
        server: Running, stub: pb_grpc.FetalFlexStub, fields: dict, needle: str) -> None:
    before = server.calls
    with pytest.raises(grpc.RpcError) as ei:
        stub.Generate(pb.GenerateRequest(**fields))
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in ei.value.details()
    assert server.calls == before


def test_oversize_message_is_refused(stub: pb_grpc.FetalFlexStub) -> None:
    with pytest.raises(grpc.RpcError) as ei:
        stub.Generate(pb.GenerateRequest(plane="TV", reference_png=b"x" * (17 * 2**20)))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_overload_sheds_and_cancellation_frees_slots(server: Running) -> None:
    assert server.server is not None
    adm = server.server.servicer.admission
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.FetalFlexStub(ch)
        futures = [stub.Generate.future(pb.GenerateRequest(plane="TV", steps=50))
                   for _ in range(5)]
        codes = []
        for f in futures:
            try:
                f.result(timeout=120)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1
    assert grpc.StatusCode.OK in codes
    with grpc.insecure_channel(server.target) as ch:
        stream = pb_grpc.FetalFlexStub(ch).GenerateStream(
            pb.GenerateRequest(plane="TV", steps=50))
        next(stream)
        stream.cancel()
    deadline = time.monotonic() + 10
    while (adm.running or adm.queued) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert adm.running == 0 and adm.queued == 0
    # A request that cannot finish in time (4 pairs: 50 steps + 35 repaint calls each).
    heavy = pb.GenerateRequest(plane="TV", steps=50, count=4, pair=True,
                               preset="ventriculomegaly")
    with grpc.insecure_channel(server.target) as ch, pytest.raises(grpc.RpcError) as ei:
        pb_grpc.FetalFlexStub(ch).Generate(heavy, timeout=0.2)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while adm.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert adm.running == 0


def test_token_auth_and_metrics(tiny_weights: Path, tmp_path: Path) -> None:
    import urllib.request

    from export.triton_server import free_port

    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    mport = free_port()
    r = Running(ServiceSettings(port=0, metrics_port=mport, weights=tiny_weights,
                                auth_token_file=token, reflection=False))
    try:
        with grpc.insecure_channel(r.target) as ch:
            stub = pb_grpc.FetalFlexStub(ch)
            with pytest.raises(grpc.RpcError) as ei:
                stub.ListPlanes(pb.ListPlanesRequest())
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as ei:
                list(stub.GenerateStream(pb.GenerateRequest(plane="TV", steps=2),
                                         metadata=[("authorization", "Bearer wrong")]))
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = stub.Generate(pb.GenerateRequest(plane="TV", steps=2,
                                                  client_request_id="PATIENT-SENTINEL-42"),
                               metadata=[("authorization", "Bearer s3cret-token")])
            assert ok.samples
            h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert h.status == health_pb2.HealthCheckResponse.SERVING  # no token needed
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read()
        from prometheus_client.parser import text_string_to_metric_families

        fams = {f.name: f for f in text_string_to_metric_families(text.decode())}
        assert "fetalflex_request_duration_seconds" in fams
        assert "fetalflex_denoiser_call_duration_seconds" in fams
        gen = [s for s in fams["fetalflex_images_generated"].samples
               if s.name.endswith("_total") and s.labels.get("plane") == "TV"]
        assert gen and gen[0].value >= 1
        info = [s for s in fams["fetalflex_model_info"].samples if s.value == 1]
        assert [(s.labels["backend"], s.labels["precision"]) for s in info] == [
            ("embedded", "fp32")]
    finally:
        r.stop()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_EDIT_JSON = st.sampled_from([
    '{"op": "remove", "structure": "cavum_septi_pellucidi"}', '{"op": "remove"}', "[]", "{",
    '{"op": "scale", "structures": ["skull"], "factor": 9}', '"x"', "null",
    '{"op": "dilate", "structure": "lateral_ventricle", "mm": 1.5}'])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(plane=st.sampled_from(["TV", "TT", "AC", "FL", "LIP", "XX", "", "tv"]),
       preset=st.sampled_from(["", "absent_csp", "cleft_lip", "short_femur", "nope"]),
       steps=st.integers(-3, 60), count=st.integers(-1, 6), seed=st.integers(-5, 2**33),
       guidance=st.floats(allow_nan=True, allow_infinity=True, width=32),
       control=st.floats(-1, 5, width=32), pair=st.booleans(),
       sampler=st.integers(0, 5), fmt=st.integers(0, 4),
       edits=st.lists(_EDIT_JSON, max_size=2))
def test_random_requests_get_ok_or_invalid_argument(
        server: Running, plane: str, preset: str, steps: int, count: int, seed: int,
        guidance: float, control: float, pair: bool, sampler: int, fmt: int,
        edits: list[str]) -> None:
    req = pb.GenerateRequest(plane=plane, preset=preset,
                             steps=min(steps, 3) if 0 < steps <= 50 else steps,
                             count=min(count, 2) if count > 0 else count,
                             seed=seed, guidance_scale=guidance, control_scale=control,
                             pair=pair, sampler=sampler, output_format=fmt,
                             edits=[pb.Edit(json=e) for e in edits])
    with grpc.insecure_channel(server.target) as ch:
        try:
            pb_grpc.FetalFlexStub(ch).Generate(req, timeout=60)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details())


def test_batching_across_requests_is_a_setting(tiny_weights: Path) -> None:
    from fetalflex.backends.batching import MicroBatcher
    from service.config import ServiceSettings
    from service.server import build_engine

    on = build_engine(ServiceSettings(weights=tiny_weights))[2]
    off = build_engine(ServiceSettings(weights=tiny_weights, batch_across_requests=False))[2]
    assert isinstance(on.call, MicroBatcher)
    assert not isinstance(off.call, MicroBatcher)
    on.call.close()
