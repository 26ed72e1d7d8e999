"""``fetalflex export onnx|repository|tensorrt``: the denoiser as ONNX, the Triton model
repository, a TensorRT plan (the work is in the top-level ``export`` package)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    from fetalflex.model.signature import TRITON_MODEL_NAMES
    from fetalflex.weights import DEFAULT_WEIGHTS

    p = sub.add_parser("export", help="export the denoiser (onnx)")
    esub = p.add_subparsers(dest="target", required=True)
    e = esub.add_parser("onnx", help="ONNX fp32/fp16 with checker, dynamic-batch and parity "
                                     "checks")
    e.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    e.add_argument("--out", default="build/onnx")
    e.add_argument("--precision", nargs="+", default=["fp32", "fp16"], choices=["fp32", "fp16"])
    e.set_defaults(func=run_onnx)
    e = esub.add_parser("repository", help="Triton model repository (configs from the signature)")
    e.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    e.add_argument("--out", default="model_repository")
    e.add_argument("--with-onnx", action="store_true",
                   help="also export the ONNX file into the onnx and cpu models")
    e.add_argument("--build", default="build/onnx")
    e.set_defaults(func=run_repository)
    e = esub.add_parser("tensorrt", help="ONNX -> TensorRT plan (on the target GPU)")
    e.add_argument("--onnx", default="build/onnx/denoiser-fp32.onnx")
    e.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    e.add_argument("--out", default=f"model_repository/{TRITON_MODEL_NAMES['trt']}/1/model.plan")
    e.add_argument("--buckets", type=int, nargs="+", default=[1, 8, 16, 32])
    e.add_argument("--fp32", action="store_true", help="no fp16 kernels")
    e.add_argument("--workspace-gib", type=float, default=4.0)
    e.set_defaults(func=run_tensorrt)


def run_onnx(args: argparse.Namespace) -> int:
    from export.onnx_export import export_all

    rep = export_all(Path(args.weights), Path(args.out), tuple(args.precision))
    print(json.dumps(rep, indent=2))
    return 0


def run_repository(args: argparse.Namespace) -> int:
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


def run_tensorrt(args: argparse.Namespace) -> int:
    from export.tensorrt_export import build_plan
    from fetalflex.model.config import DenoiserConfig

    cfg = DenoiserConfig.load(Path(args.weights) / "config.json")
    rep = build_plan(Path(args.onnx), Path(args.out), cfg, tuple(args.buckets),
                     fp16=not args.fp32, workspace_gib=args.workspace_gib)
    print(json.dumps(rep, indent=2))
    return 0
