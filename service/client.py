"""``fetalflex client``: a command-line client for people (and the load script).

Writes files like ``fetalflex generate`` does: images, label maps, regions and the output
record (``fetalflex.record``: the same sidecar, with the request as the server ran it, so
``fetalflex reproduce`` remakes a served result). Exits non-zero with the server's status
on failure.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from fetalflex.anatomy.planes import PLANE_CODES
from fetalflex.io.atomic import atomic_write_bytes
from fetalflex.io.naming import sample_file
from fetalflex.io.output_dir import prepare_output_dir
from fetalflex.record import (
    ModelFacts,
    OutputRecord,
    RecordFormat,
    SampleFiles,
    Served,
    write_record,
)
from fetalflex.request import DEFAULT_PRECISION, GenerationRequest
from fetalflex.request_flags import sampling_given
from service.api.fetalflex.v1 import fetalflex_pb2 as pb
from service.api.fetalflex.v1 import fetalflex_pb2_grpc as pb_grpc
from service.api_enums import SAMPLER_ENUM

EXT = {"png": "png", "dicom": "dcm", "raw_float32": "f32"}
RECORD_FORMAT: dict[str, RecordFormat] = {"png": "png", "dicom": "dicom", "raw_float32": "raw"}
FORMATS = {"png": pb.OUTPUT_FORMAT_PNG, "dicom": pb.OUTPUT_FORMAT_DICOM,
           "raw": pb.OUTPUT_FORMAT_RAW_FLOAT32}


def credentials(ca: str | None = None, cert: str | None = None, key: str | None = None,
                tls: bool = False) -> grpc.ChannelCredentials | None:
    """TLS credentials from PEM files, or None for plaintext.

    TLS is on when any of ``ca`` (the CA that signed the server's certificate; the
    system's roots when absent), ``cert``/``key`` (this client's certificate, for servers
    that require mTLS; both or neither) is given, or ``tls`` is set.
    """
    if (cert is None) != (key is None):
        raise ValueError("--cert/--key: give both (the client certificate and its key) "
                         "or neither")
    if not (tls or ca or cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca).read_bytes() if ca else None,
        private_key=Path(key).read_bytes() if key else None,
        certificate_chain=Path(cert).read_bytes() if cert else None)


def channel(target: str, ca: str | None = None, cert: str | None = None,
            key: str | None = None, tls: bool = False) -> grpc.Channel:
    creds = credentials(ca, cert, key, tls)
    if creds is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, creds)


def channel_from_args(args: Any) -> grpc.Channel:
    """The channel for parsed ``--target --ca --cert --key --tls`` options."""
    return channel(args.target, getattr(args, "ca", None), getattr(args, "cert", None),
                   getattr(args, "key", None), bool(getattr(args, "tls", False)))


def _metadata(token_file: str | None) -> list[tuple[str, str]]:
    if not token_file:
        return []
    return [("authorization", f"Bearer {Path(token_file).read_text().strip()}")]


def request_from(args: Any) -> pb.GenerateRequest:
    req = pb.GenerateRequest(plane=args.plane, preset=args.preset or "", count=args.n,
                             seed=args.seed, pair=args.pair,
                             output_format=FORMATS[args.format], return_layouts=True,
                             appearance=getattr(args, "appearance", None) or "")
    # unset sampling flags stay unset: the server's weights recommend (Engine.resolve)
    given = sampling_given(args)
    if "steps" in given:
        req.steps = given["steps"]
    if "guidance" in given:
        req.guidance_scale = given["guidance"]
    if "sampler" in given:
        req.sampler = SAMPLER_ENUM[given["sampler"]]
    for e in args.edit or []:
        req.edits.append(pb.Edit(json=e))
    return req


def save_response(out: Path, prefix: str, resp: pb.GenerateResponse, target: str = ""
                  ) -> Path:
    """The response's files and its output record, written atomically (mode
    ``FILE_MODE``)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    image_format: RecordFormat = "png"
    for i, s in enumerate(resp.samples):
        rec: dict[str, Any] = {"seed": s.seed}
        for key, img in (("image", s.image), ("abnormal_image", s.abnormal_image)):
            if img.data:
                image_format = RECORD_FORMAT[img.format]
                name = sample_file(prefix, i, key, EXT[img.format])
                atomic_write_bytes(out / name, img.data)
                rec[key] = name
        for key, data in (("label_map", s.label_map_png), ("abnormal_label_map",
                                                           s.abnormal_label_map_png),
                          ("region", s.edit_region_png)):
            if data:
                name = sample_file(prefix, i, key)  # the same names as `generate` writes
                atomic_write_bytes(out / name, data)
                rec[key] = name
        files.append(rec)
    if not resp.request_json:
        raise ValueError("response: the server did not return the request it ran "
                         "(request_json; a server older than this client): no output record "
                         "can be written; update the server")
    record = OutputRecord(
        **OutputRecord.provenance(not resp.synthetic),
        model=ModelFacts.model_validate({
            "id": resp.model_name, "sha256": resp.model_sha256, "backend": resp.backend,
            "precision": resp.precision or DEFAULT_PRECISION, "version": resp.model_version}),
        request=GenerationRequest.model_validate_json(resp.request_json),
        denoiser_calls=resp.denoiser_calls,
        denoiser_calls_per_sample=resp.denoiser_calls / max(len(resp.samples), 1),
        seconds=round(resp.seconds, 3), timings={t.stage: t.seconds for t in resp.timings},
        samples=[SampleFiles.model_validate(f) for f in files],
        image_format=image_format,
        served=Served(target=target, client_request_id=resp.client_request_id))
    return write_record(out, prefix, record)


def run_client(args: Any) -> int:
    if args.action != "planes":  # checked before any connection, as generate checks
        if not args.plane:
            raise ValueError(f"plane: required for `client {args.action}` (one of "
                             f"{', '.join(PLANE_CODES)}, any case)")
        prepare_output_dir(Path(args.out), args.plane.lower(), args.overwrite)
    md = _metadata(args.token_file)
    with channel_from_args(args) as ch:
        stub = pb_grpc.FetalFlexStub(ch)
        try:
            if args.action == "planes":
                r = stub.ListPlanes(pb.ListPlanesRequest(), metadata=md, timeout=args.timeout)
                for p in r.planes:
                    print(f"{p.code:4s} {p.name}: {', '.join(p.structures)} | presets: "
                          f"{', '.join(p.presets) or '-'}")
                return 0
            req = request_from(args)
            if args.action == "stream":
                resp = None
                for ev in stub.GenerateStream(req, metadata=md, timeout=args.timeout):
                    if ev.WhichOneof("event") == "progress":
                        print(f"step {ev.progress.step} {ev.progress.phase} "
                              f"t={ev.progress.timestep}", flush=True)
                    else:
                        resp = ev.result
                assert resp is not None
            else:
                resp = stub.Generate(req, metadata=md, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"fetalflex client: {exc.code().name}: {exc.details()}")
            return 1
    p = save_response(Path(args.out), args.plane.lower(), resp, args.target)
    print(f"wrote {len(resp.samples)} sample(s), sidecar {p} ({resp.denoiser_calls} calls, "
          f"{resp.seconds:.2f} s server time)")
    return 0


def load(target: str, concurrency: int, requests: int, steps: int | None = None,
         timeout_s: float = 120.0, token_file: str | None = None, ca: str | None = None,
         cert: str | None = None, key: str | None = None, tls: bool = False) -> dict[str, Any]:
    """A bounded load: ``requests`` Generate calls from ``concurrency`` client threads
    (TLS/mTLS options as in ``channel``). ``steps`` None leaves them unset: the served
    weights' recommended sampling (a distilled student's few steps)."""
    md = _metadata(token_file)
    credentials(ca, cert, key, tls)  # bad options fail here, not once per worker
    lat: list[float] = []
    codes: dict[str, int] = {}
    lock = threading.Lock()
    todo = list(range(requests))

    def worker() -> None:
        with channel(target, ca, cert, key, tls) as ch:
            stub = pb_grpc.FetalFlexStub(ch)
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                t0 = time.perf_counter()
                try:
                    req = pb.GenerateRequest(plane=("TV", "AC", "FL", "4CH")[i % 4], seed=i)
                    if steps is not None:
                        req.steps = steps
                    stub.Generate(req, metadata=md, timeout=timeout_s)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                dt = time.perf_counter() - t0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == "OK":
                        lat.append(dt)

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    wall = time.perf_counter() - t0
    lat.sort()

    def q(f: float) -> float | None:  # None (JSON null), never NaN, when nothing succeeded
        return round(lat[min(len(lat) - 1, int(f * len(lat)))], 3) if lat else None

    return {"concurrency": concurrency, "requests": requests, "steps": steps, "codes": codes,
            "p50_s": q(0.5), "p95_s": q(0.95),
            "mean_s": round(statistics.mean(lat), 3) if lat else None,
            "images_per_s": round(codes.get("OK", 0) / wall, 3), "wall_s": round(wall, 2)}
