"""The ``fetalflex`` command line (one entry point, subcommands)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fetalflex.about import __version__
from fetalflex.cli_common import HelpWithDefaults, connection_args

if TYPE_CHECKING:
    from fetalflex.dataset.makers import Maker


def _cmd_planes(args: argparse.Namespace) -> int:
    from fetalflex.anatomy.vocabulary import vocabulary

    vocab = vocabulary()
    if args.json:
        print(json.dumps(vocab, indent=2))
        return 0
    for p in vocab["planes"]:
        print(f"{p['code']:4s} {p['name']}: {p['description']}")
        print(f"     structures: {', '.join(p['structures'])}")
        print(f"     presets:    {', '.join(p['presets']) or '-'}")
    print("\nlabel ids:")
    for s in vocab["structures"]:
        print(f"  {s['id']:3d} {s['name']}")
    print("\npresets:")
    for pr in vocab["presets"]:
        print(f"  {pr['name']} [{', '.join(pr['planes'])}]: {pr['meaning']}")
    return 0


def _cmd_layout(args: argparse.Namespace) -> int:
    import numpy as np

    from fetalflex.anatomy.layout import extract, rasterize
    from fetalflex.anatomy.presets import apply_preset
    from fetalflex.anatomy.render import colourize
    from fetalflex.anatomy.templates import sample_template
    from fetalflex.io.png import write_image, write_label_map

    sl = sample_template(args.plane, args.seed, args.ga)
    layout = rasterize(sl, args.size)
    if args.preset:
        layout = apply_preset(layout, args.preset)
    out = Path(args.out)
    write_image(out, colourize(layout.label_map),
                {"Content": "FetalFlex layout (colour picture)", "Plane": args.plane})
    if args.label_map:
        write_label_map(Path(args.label_map), layout.label_map, layout.plane,
                        layout.field_mm, layout.ga_weeks)
    if args.structures:
        Path(args.structures).write_text(extract(layout).model_dump_json(indent=2) + "\n")
    present = sorted(int(v) for v in np.unique(layout.label_map))
    print(f"wrote {out} (plane {args.plane}, GA {sl.ga_weeks:.1f} w, field {sl.field_mm:.1f} mm, "
          f"label ids {present})")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fetalflex.data.phantom_set import write_phantom_set

    with tqdm(total=args.n, unit="img", desc="phantom", disable=args.quiet) as bar:

        def advance(k: int) -> None:
            bar.update(k)

        manifest = write_phantom_set(
            Path(args.out), args.n, planes=args.planes, size=args.size, seed=args.seed,
            abnormal_fraction=args.abnormal_fraction, workers=args.workers, progress=advance,
        )
    print(f"wrote {args.n} pairs and {manifest}")
    return 0


def _cmd_contact_sheet(args: argparse.Namespace) -> int:
    from fetalflex.reports.contact_sheet import write_contact_sheet

    out = write_contact_sheet(Path(args.out), size=args.size, seed=args.seed)
    print(f"wrote {out}")
    return 0




def _cmd_train(args: argparse.Namespace) -> int:
    from fetalflex.training.config import TrainConfig
    from fetalflex.training.train import STAGES, train

    cfg = TrainConfig.load(Path(args.config))
    if args.init is not None:
        cfg = cfg.model_copy(update={"init_weights": args.init})
    stages = tuple(args.stages) if args.stages else STAGES
    out = Path(args.out)
    deadline = None
    dataset = None
    if args.budget_minutes is not None:
        from fetalflex.training import clock
        from fetalflex.training.budget import fit_to_budget
        from fetalflex.training.train import load_dataset

        if (out / "checkpoint.pt").exists() and not args.no_resume:
            raise ValueError(f"--budget-minutes: {out} has a checkpoint; a budget fits a fresh "
                             "run (resume it without --budget-minutes, or pass --no-resume)")
        started = clock.now()
        deadline = started + args.budget_minutes * 60
        dataset = load_dataset(cfg, Path(args.data))  # once: the probe and training share it
        cfg, report = fit_to_budget(cfg, Path(args.data), args.budget_minutes * 60, stages,
                                    dataset=dataset, started=started)
        out.mkdir(parents=True, exist_ok=True)
        (out / "budget.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"budget: {json.dumps(report)}", flush=True)
    final = train(cfg, Path(args.data), out, stages=stages, resume=not args.no_resume,
                  progress=not args.quiet, deadline=deadline, dataset=dataset)
    print(f"final EMA weights: {final}")
    return 0


def _cmd_train_segmenter(args: argparse.Namespace) -> int:
    from fetalflex.evaluation.segmenter import train_segmenter

    out = train_segmenter(Path(args.data), Path(args.out), steps=args.steps,
                          batch_size=args.batch_size, threads=args.threads,
                          channels=tuple(args.channels) if args.channels else None)
    print(f"segmenter weights: {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.evaluate import EvalOptions, evaluate

    backend = load_backend(args.backend, Path(args.model) if args.model else None,
                           threads=args.threads, precision=args.precision)
    opts = EvalOptions(n_per_plane=args.n_per_plane, steps=tuple(args.steps),
                       default_steps=args.default_steps, guidance=args.guidance,
                       sampler=args.sampler,
                       seed=args.seed, planes=tuple(args.planes),
                       twins_per_preset=args.twins_per_preset)
    res = evaluate(backend, Path(args.segmenter), Path(args.data), Path(args.out), opts)
    print((Path(args.out) / "evaluation.md").read_text())
    print(json.dumps({k: v for k, v in res["summary"].items() if k != "by_steps"}))
    return 0


def _cmd_evaluate_downstream(args: argparse.Namespace) -> int:
    import torch

    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.downstream import run_downstream
    from fetalflex.evaluation.options import DownstreamOptions
    from fetalflex.reports.downstream_report import markdown

    if args.threads:
        torch.set_num_threads(args.threads)
    opts = DownstreamOptions(
        normals_per_plane=args.normals_per_plane, synth_per_preset=args.synth_per_preset,
        test_per_preset=args.test_per_preset, plane_sizes=tuple(args.plane_sizes),
        plane_synth_per_plane=args.plane_synth_per_plane,
        plane_test_per_plane=args.plane_test_per_plane, train_seeds=tuple(args.train_seeds),
        reader=args.reader, classifier_steps=args.classifier_steps, seed=args.seed,
        presets=tuple(args.presets) if args.presets else DownstreamOptions().presets,
        guidance=args.guidance, control_scale=args.control_scale,
        conditions=tuple(args.conditions), plane_experiment=not args.skip_plane_classifier)
    backend = load_backend(args.backend, Path(args.model) if args.model else None,
                           threads=args.threads, precision=args.precision)
    res = run_downstream(backend, opts, Path(args.out))
    print(markdown(res))
    return 0


def _cmd_evaluate_real(args: argparse.Namespace) -> int:
    import numpy as np

    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.real import REAL_PLANES, RealEvalOptions, evaluate_real
    from fetalflex.evaluation.real_data import load_real
    from fetalflex.generation import Engine
    from fetalflex.reports.real_report import examples_figure, markdown

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    engine = Engine(load_backend("embedded", Path(args.weights) if args.weights else None,
                                 threads=args.threads))
    baseline = (Engine(load_backend("embedded", Path(args.baseline_weights),
                                    threads=args.threads)) if args.baseline_weights else None)
    opts = RealEvalOptions(reader_steps=args.reader_steps, segmenter_steps=args.segmenter_steps,
                           seed=args.seed, appearance=args.appearance)
    out = Path(args.out)
    manifests = [Path(m) for m in args.data]
    res = evaluate_real(engine, manifests, out, opts, baseline=baseline,
                        frd_python=args.frd_python,
                        log=lambda m: print(m, flush=True))
    md = markdown(res)
    (out / "real_eval.md").write_text(md)
    val = load_real(manifests, "val")
    gen = np.load(out / "cache" / "generated_latest.npy")
    title = (f"SYNTHETIC {args.appearance}-appearance scans, model {res['model'][:12]}\n"
             f"generated from the validation layouts")
    examples_figure(out / "generated_by_plane.png", val.planes, gen, REAL_PLANES, title=title)
    examples_figure(out / "real_vs_generated.png", val.planes, gen, REAL_PLANES,
                    real=val.images, title="left: real validation scans (data-set pixels: do "
                    "not publish); right: generated (SYNTHETIC)")
    print(md)
    print(f"wrote {out / 'real_eval.json'}, {out / 'real_eval.md'} and figures")
    return 0


def _cmd_evaluate_downstream_real(args: argparse.Namespace) -> int:
    from fetalflex.backends.backends import load_backend
    from fetalflex.evaluation.options import RealDownstreamOptions
    from fetalflex.evaluation.real_downstream import evaluate_downstream_real
    from fetalflex.generation import Engine
    from fetalflex.reports.real_downstream_report import figure, markdown

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    opts = RealDownstreamOptions(
        head_sizes=tuple(args.head_sizes), plane_sizes=tuple(args.plane_sizes),
        seeds=tuple(args.seeds), segmenter_steps=args.segmenter_steps,
        reader_steps=args.reader_steps, synth_heads=args.synth_heads,
        synth_per_class=args.synth_per_class, appearance=args.appearance,
        parts=tuple(args.parts))
    engine = Engine(load_backend("embedded", Path(args.weights) if args.weights else None,
                                 threads=args.threads))
    out = Path(args.out)
    res = evaluate_downstream_real(engine, [Path(m) for m in args.data], out, opts,
                                   log=lambda m: print(m, flush=True))
    md = markdown(res)
    (out / "real_downstream.md").write_text(md)
    figure(res, out / "real_downstream.png")
    print(md)
    print(f"wrote {out / 'real_downstream.json'}, {out / 'real_downstream.md'} and "
          f"{out / 'real_downstream.png'}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from fetalflex.generate_cli import run_generate

    return run_generate(args)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from fetalflex.api import FetalFlex
    from fetalflex.io.output_dir import prepare_output_dir
    from fetalflex.record import read_recipe

    record = read_recipe(Path(args.sidecar))  # a clear error before any model loads
    prepare_output_dir(Path(args.out), args.prefix or record.request.plane.lower(),
                       args.overwrite)
    ff = FetalFlex.load(args.weights, backend=args.backend, threads=args.threads,
                        precision=record.model.precision)
    out = ff.reproduce(Path(args.sidecar))
    path = out.save(Path(args.out), args.prefix, overwrite=args.overwrite)
    print(f"reproduced {len(out.images)} sample(s) from {args.sidecar} into {path}")
    return 0


def _cmd_gallery(args: argparse.Namespace) -> int:
    from fetalflex.generate_cli import run_gallery

    return run_gallery(args)


def _backend_args(p: argparse.ArgumentParser) -> None:
    from fetalflex.model.signature import DEFAULT_TRITON_MODEL
    from fetalflex.request import BACKEND_NAMES, DEFAULT_BACKEND

    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES)
    p.add_argument("--triton-url", help="Triton gRPC address, e.g. 127.0.0.1:8001")
    p.add_argument("--triton-model", default=DEFAULT_TRITON_MODEL)
    p.add_argument("--triton-shm", action="store_true",
                   help="pass tensors through system shared memory (same host as Triton)")
    p.add_argument("--weights", help="denoiser weights folder (default: the shipped demo)")
    p.add_argument("--threads", type=int, default=None)
    _precision_arg(p)
    _sampling_args(p)
    p.add_argument("--quiet", action="store_true")


def _precision_arg(p: argparse.ArgumentParser) -> None:
    from fetalflex.request import DEFAULT_PRECISION, PRECISIONS

    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="arithmetic of the embedded graph (int8: static, calibrated; built on "
                        "first use)")


# Request fields each command takes as flags (the flags themselves: request_flags.py).
SAMPLING_FIELDS = ("seed", "steps", "guidance", "sampler")
GENERATE_FIELDS = ("preset", "ga_weeks", "pair", "n", "control_scale", "appearance")
CLIENT_FIELDS = ("preset", "pair", "n", "appearance")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    """The request schema's seed, steps, guidance and sampler (its defaults and names)."""
    from fetalflex.request_flags import add_request_flags

    add_request_flags(p, SAMPLING_FIELDS)






def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from export.onnx_export import export_all

    rep = export_all(Path(args.weights), Path(args.out), tuple(args.precision))
    print(json.dumps(rep, indent=2))
    return 0


def _cmd_export_repository(args: argparse.Namespace) -> int:
    from export.triton_repository import write_repository
    from fetalflex.backends.onnx_model import export_onnx
    from fetalflex.model.config import DenoiserConfig
    from fetalflex.model.denoiser import FetalFlexDenoiser

    weights = Path(args.weights)
    cfg = DenoiserConfig.load(weights / "config.json")
    onnx_file = None
    if args.with_onnx:
        onnx_file = export_onnx(FetalFlexDenoiser.load(weights),
                                Path(args.build) / "denoiser-fp32.onnx")
    for p in write_repository(Path(args.out), cfg, onnx_file):
        print(f"wrote {p}")
    return 0


def _cmd_export_tensorrt(args: argparse.Namespace) -> int:
    from export.tensorrt_export import build_plan
    from fetalflex.model.config import DenoiserConfig

    cfg = DenoiserConfig.load(Path(args.weights) / "config.json")
    rep = build_plan(Path(args.onnx), Path(args.out), cfg, tuple(args.buckets),
                     fp16=not args.fp32, workspace_gib=args.workspace_gib)
    print(json.dumps(rep, indent=2))
    return 0




def _cmd_serve(args: argparse.Namespace) -> int:
    from service.serve_cli import settings_from_args
    from service.server import serve

    serve(settings_from_args(args))
    return 0


def _cmd_client(args: argparse.Namespace) -> int:
    from service.client import run_client

    return run_client(args)


def _cmd_load(args: argparse.Namespace) -> int:
    from service.client import load

    res = load(args.target, args.concurrency, args.requests, args.steps,
               token_file=args.token_file, ca=args.ca, cert=args.cert, key=args.key,
               tls=args.tls)
    print(json.dumps(res, allow_nan=False))
    ok = res["codes"].get("OK", 0)
    if ok < res["requests"]:
        print(f"load: {res['requests'] - ok} of {res['requests']} requests failed "
              f"({res['codes']})", file=sys.stderr)
    return 0 if ok == res["requests"] else 1




def _cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from service.client import channel_from_args

    try:
        with channel_from_args(args) as ch:
            # types-grpcio-health-checking declares HealthStub without its methods
            r = health_pb2_grpc.HealthStub(ch).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}: {exc.details()}")
        return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
    print(name)
    return 0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1


def build_parser() -> argparse.ArgumentParser:
    from fetalflex.anatomy.biometry import GA_MAX, GA_MIN
    from fetalflex.anatomy.layout import DEFAULT_FIELD_MM
    from fetalflex.anatomy.planes import PLANE_CODES, canonical_code
    from fetalflex.anatomy.presets import BY_NAME as PRESET_NAMES
    from fetalflex.evaluation.options import (
        REAL_DOWNSTREAM_PARTS,
        RealDownstreamOptions,
        RealEvalOptions,
    )
    from fetalflex.model.config import DenoiserConfig
    from fetalflex.model.signature import TRITON_MODEL_NAMES
    from fetalflex.record import OUTPUT_FORMATS
    from fetalflex.request import (
        APPEARANCE_NAMES,
        DEFAULT_BACKEND,
        DEFAULT_STEPS,
        IN_PROCESS_BACKENDS,
        SAMPLER_NAMES,
    )
    from fetalflex.request_flags import add_request_flags
    from fetalflex.weights import DEFAULT_WEIGHTS

    # Label maps and phantoms default to the shipped model's size (what generate needs).
    model_size = DenoiserConfig.load(DEFAULT_WEIGHTS / "config.json").image_size
    size_help = "side in pixels (default: the shipped model's image size, %(default)s)"
    GA_HELP = f"gestational age, weeks ({GA_MIN:g}-{GA_MAX:g})"

    ap = argparse.ArgumentParser(
        prog="fetalflex", formatter_class=HelpWithDefaults,
        description="Anatomy-guided synthesis of fetal ultrasound planes. Every image is "
                    "SYNTHETIC (phantom world) and not for diagnosis.",
    )
    ap.add_argument("--version", action="version", version=f"fetalflex {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    _add = sub.add_parser

    def add_parser(*a: Any, **k: Any) -> argparse.ArgumentParser:
        """Every sub-command's --help shows its defaults."""
        return _add(*a, formatter_class=HelpWithDefaults, **k)

    # argparse has no default formatter for sub-commands: wrap the bound method
    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("planes", help="list planes, structures, label ids and presets")
    p.add_argument("--json", action="store_true", help="print the vocabulary as JSON")
    p.set_defaults(func=_cmd_planes)

    p = sub.add_parser("layout", help="render a colour picture of a template layout")
    p.add_argument("--plane", required=True, choices=PLANE_CODES, type=canonical_code)
    p.add_argument("--preset", choices=sorted(PRESET_NAMES), type=str.lower)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ga", type=float, default=None, help=GA_HELP)
    p.add_argument("--size", type=int, default=model_size, help=size_help)
    p.add_argument("--out", required=True, help="colour PNG to write")
    p.add_argument("--label-map", help="also write the label-id PNG here")
    p.add_argument("--structures", help="also write the extracted structure list JSON here")
    p.set_defaults(func=_cmd_layout)

    p = sub.add_parser("phantom", help="write a phantom data set (images, label maps, manifest)")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--planes", nargs="+", default=list(PLANE_CODES), choices=PLANE_CODES,
                   type=canonical_code)
    p.add_argument("--size", type=int, default=model_size, help=size_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--abnormal-fraction", type=float, default=0.0,
                   help="fraction of abnormal phantoms (for evaluation only)")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("contact-sheet", help="write the phantom contact sheet PNG")
    p.add_argument("--out", default="contact_sheet.png")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=_cmd_contact_sheet)

    from fetalflex.data.importers.cli import add_import_parser

    add_import_parser(sub, model_size)

    p = sub.add_parser("train", help="train the denoiser (base, pre-alignment, control)")
    p.add_argument("--config", required=True, help="training config JSON")
    p.add_argument("--data", required=True, help="manifest.jsonl")
    p.add_argument("--out", required=True, help="run directory (resumed if it has a checkpoint)")
    p.add_argument("--stages", nargs="+", choices=["base", "prealign", "control"])
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--init", default=None, metavar="WEIGHTS",
                   help="fine-tune: start from these weights (a folder with config.json and "
                        "model.safetensors, e.g. the shipped ones: "
                        "fetalflex/weights/denoiser); sets the config's init_weights")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="measure each stage's step rate here, scale the recipe's steps to fit "
                        "this wall-clock budget, and stop at it (fetalflex/training/budget.py)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (log.jsonl has it all)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("train-segmenter", help="train the reference segmenter on phantoms")
    p.add_argument("--data", required=True, help="manifest.jsonl")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help="U-Net widths per level (default: SegmenterConfig's)")
    p.set_defaults(func=_cmd_train_segmenter)
    from fetalflex.evaluation.options import (
        CONDITIONS,
        READERS,
        DownstreamOptions,
        EvalOptions,
    )
    from fetalflex.weights import DEFAULT_SEGMENTER

    p = sub.add_parser("evaluate", help="adherence, brightness, texture and anomaly twins per "
                                        "plane, against sampler steps (phantom world)")
    p.add_argument("--model", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=IN_PROCESS_BACKENDS)
    _precision_arg(p)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER))
    p.add_argument("--data", required=True, help="evaluation manifest.jsonl (not training data)")
    p.add_argument("--out", required=True)
    p.add_argument("--n-per-plane", type=int, default=EvalOptions.n_per_plane)
    p.add_argument("--steps", type=int, nargs="+", default=list(EvalOptions.steps),
                   help="sampler steps to compare")
    p.add_argument("--default-steps", type=int, default=EvalOptions.default_steps,
                   help="steps of the abnormal-layout and twin rows (must be in --steps)")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance (default: the request schema's)")
    p.add_argument("--sampler", default=EvalOptions.sampler, choices=SAMPLER_NAMES)
    p.add_argument("--twins-per-preset", type=int, default=EvalOptions.twins_per_preset)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planes", nargs="+", default=list(PLANE_CODES), choices=PLANE_CODES,
                   type=canonical_code)
    p.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("evaluate-downstream",
                       help="anomaly classifiers trained on FetalFlex twins vs baselines (AUC)")
    p.add_argument("--model", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=IN_PROCESS_BACKENDS)
    _precision_arg(p)
    p.add_argument("--out", required=True)
    D = DownstreamOptions()
    p.add_argument("--normals-per-plane", type=int, default=D.normals_per_plane)
    p.add_argument("--synth-per-preset", type=int, default=D.synth_per_preset)
    p.add_argument("--test-per-preset", type=int, default=D.test_per_preset)
    p.add_argument("--plane-sizes", type=int, nargs="+", default=list(D.plane_sizes))
    p.add_argument("--plane-synth-per-plane", type=int, default=D.plane_synth_per_plane)
    p.add_argument("--plane-test-per-plane", type=int, default=D.plane_test_per_plane)
    p.add_argument("--train-seeds", type=int, nargs="+", default=list(D.train_seeds))
    p.add_argument("--reader", choices=READERS, default=D.reader,
                   help="the classifiers' architecture and recipe (small: the reader of the "
                        "runs up to v3, train it 300 steps to repeat them)")
    p.add_argument("--classifier-steps", type=int, default=D.classifier_steps)
    p.add_argument("--presets", nargs="+", choices=sorted(PRESET_NAMES), type=str.lower,
                   default=None)
    p.add_argument("--guidance", type=float, default=D.guidance,
                   help="classifier-free guidance of the twins' repaint")
    p.add_argument("--control-scale", type=float, default=D.control_scale,
                   help="anatomy-control scale of the twins' repaint")
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(D.conditions),
                   help="training regimes to run (normal_only and oracle do not depend on "
                        "the generator)")
    p.add_argument("--skip-plane-classifier", action="store_true",
                   help="leave out the plane-classifier experiment")
    p.add_argument("--seed", type=int, default=D.seed)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_cmd_evaluate_downstream)
    p = sub.add_parser("evaluate-real", help="realism, outline control and copying on real "
                                             "validation scans (imported manifests)")
    p.add_argument("--data", nargs="+", required=True,
                   help="manifest(s) written by `fetalflex import` (their val split is measured)")
    p.add_argument("--out", default="out/real_eval")
    p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--baseline-weights", default=None,
                   help="also measure these weights (phantom appearance) on the same requests")
    p.add_argument("--appearance", default="real", choices=APPEARANCE_NAMES, type=str.lower)
    p.add_argument("--frd-python", default=None,
                   help="a Python interpreter with frd-score + pyradiomics, for the FRD rows "
                        "(default: this one, if it has them)")
    p.add_argument("--reader-steps", type=int, default=RealEvalOptions().reader_steps)
    p.add_argument("--segmenter-steps", type=int, default=RealEvalOptions().segmenter_steps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_cmd_evaluate_real)

    d = RealDownstreamOptions()
    p = sub.add_parser("evaluate-downstream-real",
                       help="do generated scans help real models? head segmentation (HC18) "
                            "and plane classification (FETAL_PLANES_DB), real only vs real + "
                            "synthetic vs synthetic only, on the validation split")
    p.add_argument("--data", nargs="+", required=True,
                   help="manifest(s) written by `fetalflex import` (their val split is measured)")
    p.add_argument("--out", default="out/real_downstream")
    p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--appearance", default=d.appearance, choices=APPEARANCE_NAMES,
                   type=str.lower)
    p.add_argument("--head-sizes", type=int, nargs="+", default=list(d.head_sizes),
                   help="real training heads per cell (0 = all)")
    p.add_argument("--plane-sizes", type=int, nargs="+", default=list(d.plane_sizes),
                   help="real training scans per class per cell (0 = all)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    p.add_argument("--segmenter-steps", type=int, default=d.segmenter_steps)
    p.add_argument("--reader-steps", type=int, default=d.reader_steps)
    p.add_argument("--synth-heads", type=int, default=d.synth_heads)
    p.add_argument("--synth-per-class", type=int, default=d.synth_per_class)
    p.add_argument("--parts", nargs="+", default=list(d.parts), choices=REAL_DOWNSTREAM_PARTS)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_cmd_evaluate_downstream_real)

    p = sub.add_parser("generate", help="generate synthetic images (the main job)")
    p.add_argument("--plane", required=True, choices=PLANE_CODES, type=canonical_code)
    # The request's own fields: flags derived from the schema (fetalflex/request_flags.py).
    add_request_flags(p, GENERATE_FIELDS, choices={"preset": sorted(PRESET_NAMES)})
    p.add_argument("--edit", action="append",
                   help="edit JSON object or list (or @file.json); repeatable")
    p.add_argument("--layout", help="label-map PNG or structure-list JSON")
    p.add_argument("--field-mm", type=float, default=None,
                   help="image side in mm for a label-map PNG layout (default: what the PNG "
                        f"says, as `fetalflex layout` writes it, else {DEFAULT_FIELD_MM:g})")
    p.add_argument("--reference", help="reference image PNG to repaint")
    p.add_argument("--reference-layout", help="the reference image's layout")
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", help="file name prefix (default: the plane)")
    p.add_argument("--format", default=OUTPUT_FORMATS[0], choices=OUTPUT_FORMATS,
                   help="image files: PNG or DICOM Secondary Capture (label maps: PNG)")
    _overwrite_arg(p)
    _backend_args(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("reproduce", help="regenerate the outputs of a sidecar JSON, byte for "
                                         "byte (same weights)")
    p.add_argument("sidecar", help="the .json sidecar written by generate / the Python API")
    p.add_argument("--out", required=True)
    p.add_argument("--prefix", default=None)
    _overwrite_arg(p)
    p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=IN_PROCESS_BACKENDS)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("gallery", help="normal planes + anomaly pairs, one gallery PNG")
    p.add_argument("--out", default="out/gallery")
    _overwrite_arg(p)
    _backend_args(p)
    p.set_defaults(func=_cmd_gallery)
    p = sub.add_parser("export", help="export the denoiser (onnx)")
    esub = p.add_subparsers(dest="target", required=True)
    e = esub.add_parser("onnx", help="ONNX fp32/fp16 with checker, dynamic-batch and parity "
                                     "checks")
    e.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    e.add_argument("--out", default="build/onnx")
    e.add_argument("--precision", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    e.set_defaults(func=_cmd_export_onnx)
    e = esub.add_parser("repository", help="Triton model repository (configs from the signature)")
    e.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    e.add_argument("--out", default="model_repository")
    e.add_argument("--with-onnx", action="store_true",
                   help="also export the ONNX file into the onnx and cpu models")
    e.add_argument("--build", default="build/onnx")
    e.set_defaults(func=_cmd_export_repository)
    e = esub.add_parser("tensorrt", help="ONNX -> TensorRT plan (on the target GPU)")
    e.add_argument("--onnx", default="build/onnx/denoiser-fp32.onnx")
    e.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    e.add_argument("--out", default=f"model_repository/{TRITON_MODEL_NAMES['trt']}/1/model.plan")
    e.add_argument("--buckets", type=int, nargs="+", default=[1, 8, 16, 32])
    e.add_argument("--fp32", action="store_true", help="no fp16 kernels")
    e.add_argument("--workspace-gib", type=float, default=4.0)
    e.set_defaults(func=_cmd_export_tensorrt)
    from service.serve_cli import add_serve_arguments

    p = sub.add_parser("serve", help="run the gRPC service (settings: flags > --config JSON > "
                                     "FETALFLEX_* env vars > defaults)")
    add_serve_arguments(p)
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("client", help="talk to a running service")
    p.add_argument("action", choices=["generate", "stream", "planes"])
    connection_args(p, token=True)
    p.add_argument("--plane", choices=PLANE_CODES, type=canonical_code,
                   help="required for generate and stream, as for `fetalflex generate`")
    add_request_flags(p, CLIENT_FIELDS, choices={"preset": sorted(PRESET_NAMES)})
    p.add_argument("--edit", action="append", help="edit JSON (repeatable)")
    _sampling_args(p)
    p.add_argument("--format", default=OUTPUT_FORMATS[0], choices=[*OUTPUT_FORMATS, "raw"])
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--out", default="out/client")
    _overwrite_arg(p)
    p.set_defaults(func=_cmd_client)

    p = sub.add_parser("load", help="bounded load against a running service (p50/p95)")
    connection_args(p, token=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.set_defaults(func=_cmd_load)
    # A thin dispatch: main() hands `fetalflex bench ...` to the top-level bench package
    # (`python -m bench`), which the library never imports; listed here for --help.
    sub.add_parser("bench", help="benchmarks: `fetalflex bench <name> ...` runs "
                                 "`python -m bench <name> ...` (table + JSON + PNG)")
    p = sub.add_parser("health", help="gRPC health check (exit 0 when SERVING); the API port "
                                      "with its TLS options, or the plaintext health port")
    connection_args(p, token=False)
    p.add_argument("--service", default="")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=_cmd_health)
    from fetalflex.dataset.cli import add_dataset_command

    add_dataset_command(sub, _dataset_service_maker)
    return ap


def _dataset_service_maker(args: argparse.Namespace, concurrency: int) -> Maker:
    """``fetalflex dataset run --target``: the item maker that calls a running service. It
    speaks the service's gRPC API, so it lives in ``service/``; the library's ``dataset``
    command gets it from here, the entry point (as ``bench`` is dispatched from ``main``)."""
    from service.dataset_remote import maker_from_args

    return maker_from_args(args, concurrency)


def _overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing the earlier outputs of the "
                        "same prefix (refused otherwise: the files of two requests would mix)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from bench.cli import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # the reader went away (`fetalflex planes --json | head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        for line in _error_lines(exc):
            print(f"fetalflex {args.command}: error: {line}", file=sys.stderr)
        return 2


def _error_lines(exc: BaseException) -> list[str]:
    """``field: reason`` lines for a validation error (no pydantic dump, no URL)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return [f"{'.'.join(str(x) for x in e['loc']) or 'request'}: "
                f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
    return [str(exc)]


if __name__ == "__main__":
    raise SystemExit(main())
