"""``python -m bench <name>`` (or ``fetalflex bench <name>``, which hands its arguments
here): every benchmark prints a table and writes JSON (+ a PNG plot) under ``--out``
(default ``out/bench``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fetalflex.cli_common import HelpWithDefaults
from fetalflex.request import DEFAULT_PRECISION, DEFAULT_STEPS, PRECISIONS, SAMPLER_NAMES
from fetalflex.weights import DEFAULT_SEGMENTER

OUT = "out/bench"


def _weights(args: argparse.Namespace) -> Path | None:
    return Path(args.weights) if args.weights else None


def _denoiser(args: argparse.Namespace) -> int:
    from bench.denoiser_latency import bench_denoiser

    bench_denoiser(_weights(args), Path(args.out), tuple(args.batches), reps=args.reps,
                   threads=args.threads)
    return 0


def _sampler(args: argparse.Namespace) -> int:
    from bench.sampler_cost import bench_sampler_cost

    bench_sampler_cost(_weights(args), Path(args.segmenter), Path(args.data), Path(args.out),
                       per_plane=args.per_plane, baseline_n=args.baseline_n,
                       threads=args.threads)
    return 0


def _main_job(args: argparse.Namespace) -> int:
    from bench.main_job import bench_main_job

    bench_main_job([Path(w) for w in args.weights] if args.weights else None, Path(args.out),
                   tuple(args.guidance) if args.guidance else (None,), reps=args.reps,
                   threads=args.threads, precisions=tuple(args.precision),
                   steps=tuple(args.steps) if args.steps else (None,),
                   samplers=tuple(args.sampler) if args.sampler else (None,),
                   baseline=args.baseline)
    return 0


def _e2e(args: argparse.Namespace) -> int:
    from bench.serving import bench_end_to_end

    bench_end_to_end(_weights(args), Path(args.out), tuple(args.concurrency),
                     requests_per_client=args.requests_per_client, steps=args.steps,
                     setups=tuple(args.setups), triton_env=Path(args.env),
                     student=Path(args.student) if args.student else None)
    return 0


def _grpc(args: argparse.Namespace) -> int:
    from bench.serving import bench_grpc

    bench_grpc(_weights(args), Path(args.out), reps=args.reps, steps=args.steps)
    return 0


def _step_profile(args: argparse.Namespace) -> int:
    from bench.step_profile import bench_step_profile

    bench_step_profile(_weights(args), Path(args.out), reps=args.reps,
                       precisions=tuple(args.precision), plane=args.plane)
    return 0


def _gpu(args: argparse.Namespace) -> int:
    from bench.gpu import bench_gpu

    bench_gpu(_weights(args), Path(args.out), tuple(args.batches), reps=args.reps,
              device=args.device, variants=tuple(args.variants) if args.variants else None)
    return 0


def _triton(args: argparse.Namespace) -> int:
    from bench.triton_step import bench_triton

    bench_triton(_weights(args), Path(args.env), reps=args.reps, concurrency=args.concurrency,
                 out=Path(args.out))
    return 0


def _phantom(args: argparse.Namespace) -> int:
    from bench.phantom import bench_phantom
    from bench.results import print_table, write_results

    rows: list[dict[str, Any]] = list(bench_phantom(tuple(args.sizes), n=args.n,
                                                    workers=args.workers))
    print_table(rows)
    write_results(Path(args.out), "phantom", rows)
    return 0


def _prealign(args: argparse.Namespace) -> int:
    from bench.prealign import bench_prealign
    from fetalflex.training.config import TrainConfig

    bench_prealign(Path(args.base_checkpoint), TrainConfig.load(Path(args.config)),
                   Path(args.data), Path(args.eval_data), Path(args.segmenter), Path(args.out),
                   steps=args.steps, eval_every=args.eval_every, n_per_plane=args.n_per_plane)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bench.setups import CPU_SETUPS, SETUPS

    ap = argparse.ArgumentParser(
        prog="python -m bench", formatter_class=HelpWithDefaults,
        description="benchmarks: a table + JSON + PNG under --out (nothing asserts a speed)")
    bsub = ap.add_subparsers(dest="bench", required=True)

    def common(name: str, helps: str, weights: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = bsub.add_parser(name, help=helps,
                                                     formatter_class=HelpWithDefaults)
        p.add_argument("--out", default=OUT)
        if weights:
            p.add_argument("--weights", default=None, help="denoiser weights (default: shipped)")
        return p

    p = common("denoiser", "per-call latency/throughput vs batch: PyTorch eager vs ONNX Runtime")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_denoiser)

    p = common("sampler", "calls, seconds and adherence per sampler, repaint setting and the "
                          "diffusers RePaint baseline")
    p.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER))
    p.add_argument("--data", required=True, help="evaluation manifest.jsonl")
    p.add_argument("--per-plane", type=int, default=2)
    p.add_argument("--baseline-n", type=int, default=2,
                   help="twins also made with diffusers' RePaint defaults (2,410 calls each)")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_sampler)

    p = common("main-job", "seconds per image of the default request, several weights / "
                           "guidance values side by side", weights=False)
    p.add_argument("--weights", nargs="+", default=None,
                   help="weights folders to compare (default: shipped)")
    p.add_argument("--guidance", type=float, nargs="+", default=None,
                   help="guidance values (default: the request schema's)")
    p.add_argument("--precision", nargs="+", default=[DEFAULT_PRECISION], choices=PRECISIONS,
                   help="denoiser precisions to compare, each on the first backend that "
                        "runs it (fp32, int8: the embedded graph; bf16: torch under bf16 "
                        "autocast, on CPUs with native bf16)")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="sampler steps (default: the request schema's)")
    p.add_argument("--sampler", nargs="+", default=None, choices=SAMPLER_NAMES,
                   help="samplers (default: the request schema's)")
    p.add_argument("--baseline", action="store_true",
                   help="add the notebook baseline (PyTorch eager, DDIM-50) and vs_notebook")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=_main_job)

    p = common("e2e", "images/s and p50/p95 through gRPC: embedded vs Triton, with and "
                      "without batching across requests")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps of every request (default: unset, what each served "
                        "weights recommend)")
    p.add_argument("--setups", nargs="+", default=list(CPU_SETUPS), choices=SETUPS)
    p.add_argument("--student", default=None, metavar="WEIGHTS",
                   help="also run every set-up with these (student) weights, side by side")
    p.add_argument("--env", default=".venv-triton", help="the nvidia-pytriton venv")
    p.set_defaults(func=_e2e)

    p = common("grpc", "the gRPC path's overhead vs in-process, same request")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.set_defaults(func=_grpc)

    p = common("step-profile", "a served request's time per step: denoiser vs orchestrator vs "
                               "transport, and the orchestrator's hottest functions")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--precision", nargs="+", default=[DEFAULT_PRECISION], choices=PRECISIONS)
    p.add_argument("--plane", default="TV")
    p.set_defaults(func=_step_profile)

    p = common("gpu", "eager vs CUDA graphs vs torch.compile vs ONNX Runtime vs TensorRT, "
                      "fraction of measured peak (run where a GPU is)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 8, 16, 32])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--device", choices=["cuda", "cpu"], default=None)
    p.add_argument("--variants", nargs="+", default=None)
    p.set_defaults(func=_gpu)

    p = common("triton", "per-step latency Triton vs embedded, rows per Triton execution")
    p.add_argument("--env", default=".venv-triton", help="the nvidia-pytriton venv")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=8)
    p.set_defaults(func=_triton)

    p = common("phantom", "phantom simulator throughput (images/s) per size", weights=False)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=_phantom)

    p = common("prealign", "adherence per control step, pre-alignment on/off", weights=False)
    p.add_argument("--base-checkpoint", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--eval-data", required=True)
    p.add_argument("--segmenter", default=str(DEFAULT_SEGMENTER))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--n-per-plane", type=int, default=2)
    p.set_defaults(func=_prealign)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
