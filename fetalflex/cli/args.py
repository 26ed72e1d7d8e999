"""What the command modules share: flag helpers, the request fields each command takes as
flags, values computed when the parser is built, and the dataset command's service maker."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from fetalflex.dataset.makers import Maker

# The object ``build_parser`` hands each command module's ``register``.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# Request fields each command takes as flags (the flags themselves: request_flags.py).
SAMPLING_FIELDS = ("seed", "steps", "guidance", "sampler")
GENERATE_FIELDS = ("preset", "ga_weeks", "pair", "n", "control_scale", "appearance")
CLIENT_FIELDS = ("preset", "pair", "n", "appearance")

SIZE_HELP = "side in pixels (default: the shipped model's image size, %(default)s)"


def model_size() -> int:
    """Label maps and phantoms default to the shipped model's size (what generate needs)."""
    from fetalflex.model.config import DenoiserConfig
    from fetalflex.weights import DEFAULT_WEIGHTS

    return DenoiserConfig.load(DEFAULT_WEIGHTS / "config.json").image_size


def ga_help() -> str:
    from fetalflex.anatomy.biometry import GA_MAX, GA_MIN

    return f"gestational age, weeks ({GA_MIN:g}-{GA_MAX:g})"


def backend_args(p: argparse.ArgumentParser) -> None:
    from fetalflex.model.signature import DEFAULT_TRITON_MODEL
    from fetalflex.request import BACKEND_NAMES, DEFAULT_BACKEND

    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKEND_NAMES)
    p.add_argument("--triton-url", help="Triton gRPC address, e.g. 127.0.0.1:8001")
    p.add_argument("--triton-model", default=DEFAULT_TRITON_MODEL)
    p.add_argument("--triton-shm", action="store_true",
                   help="pass tensors through system shared memory (same host as Triton)")
    p.add_argument("--weights", help="denoiser weights folder (default: the shipped demo)")
    p.add_argument("--threads", type=int, default=None)
    precision_arg(p)
    sampling_args(p)
    p.add_argument("--quiet", action="store_true")


def precision_arg(p: argparse.ArgumentParser) -> None:
    from fetalflex.request import DEFAULT_PRECISION, PRECISIONS

    p.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="arithmetic of the denoiser: fp32; int8, the embedded backend's "
                        "static calibrated graph (built on first use); bf16, the torch "
                        "backend under bf16 autocast (fast only on CPUs with AVX-512 BF16 or "
                        "AMX, and GPUs)")


def sampling_args(p: argparse.ArgumentParser) -> None:
    """The request schema's seed, steps, guidance and sampler (its defaults and names)."""
    from fetalflex.request_flags import add_request_flags

    add_request_flags(p, SAMPLING_FIELDS)


def overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing the earlier outputs of the "
                        "same prefix (refused otherwise: the files of two requests would mix)")


def dataset_service_maker(args: argparse.Namespace, concurrency: int) -> Maker:
    """``fetalflex dataset run --target``: the item maker that calls a running service. It
    speaks the service's gRPC API, so it lives in ``service/``; the library's ``dataset``
    command gets it from here, the entry point (as ``bench`` is dispatched from ``main``)."""
    from service.dataset_remote import maker_from_args

    return maker_from_args(args, concurrency)
