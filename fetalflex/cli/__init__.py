"""The ``fetalflex`` command line (one entry point, subcommands).

Each command is a module of this package, named after it (``fetalflex evaluate-real``:
``evaluate_real.py``), with ``register(sub)``, which adds its parser and flags, and
``run(args)``, which does the work with lazy imports (``--help`` stays fast). The flags
several commands share are in ``args.py``. ``import`` and ``dataset`` are registered by
their own packages; ``bench`` is dispatched by ``main`` to the top-level ``bench`` package.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from fetalflex.about import __version__
from fetalflex.cli import (
    calibrate_real,
    client,
    compare_evaluations,
    contact_sheet,
    distill,
    evaluate,
    evaluate_downstream,
    evaluate_downstream_real,
    evaluate_real,
    export,
    gallery,
    generate,
    health,
    layout,
    load,
    phantom,
    planes,
    reproduce,
    serve,
    train,
    train_segmenter,
    tune,
)
from fetalflex.cli.args import (
    CLIENT_FIELDS,
    GENERATE_FIELDS,
    SAMPLING_FIELDS,
    dataset_service_maker,
    model_size,
)
from fetalflex.cli_common import HelpWithDefaults

__all__ = ["CLIENT_FIELDS", "GENERATE_FIELDS", "SAMPLING_FIELDS", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fetalflex", formatter_class=HelpWithDefaults,
        description="Anatomy-guided synthesis of fetal ultrasound planes. Every image is "
                    "SYNTHETIC (phantom or real-scan look, as asked) and not for "
                    "diagnosis.",
    )
    ap.add_argument("--version", action="version", version=f"fetalflex {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    _add = sub.add_parser

    def add_parser(*a: Any, **k: Any) -> argparse.ArgumentParser:
        """Every sub-command's --help shows its defaults."""
        return _add(*a, formatter_class=HelpWithDefaults, **k)

    # argparse has no default formatter for sub-commands: wrap the bound method
    sub.add_parser = add_parser  # type: ignore[method-assign]

    # The order here is the order `fetalflex --help` lists the commands in.
    planes.register(sub)
    layout.register(sub)
    phantom.register(sub)
    contact_sheet.register(sub)
    from fetalflex.data.importers.cli import add_import_parser

    add_import_parser(sub, model_size())
    train.register(sub)
    train_segmenter.register(sub)
    distill.register(sub)
    calibrate_real.register(sub)
    evaluate.register(sub)
    evaluate_downstream.register(sub)
    evaluate_real.register(sub)
    evaluate_downstream_real.register(sub)
    compare_evaluations.register(sub)
    generate.register(sub)
    reproduce.register(sub)
    gallery.register(sub)
    export.register(sub)
    serve.register(sub)
    client.register(sub)
    load.register(sub)
    # A thin dispatch: main() hands `fetalflex bench ...` to the top-level bench package
    # (`python -m bench`), which the library never imports; listed here for --help.
    sub.add_parser("bench", help="benchmarks: `fetalflex bench <name> ...` runs "
                                 "`python -m bench <name> ...` (table + JSON + PNG)")
    health.register(sub)
    tune.register(sub)
    from fetalflex.dataset.cli import add_dataset_command

    add_dataset_command(sub, dataset_service_maker)
    return ap


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

    from fetalflex.errors import field_errors

    if isinstance(exc, ValidationError):
        return [str(e) for e in field_errors(exc)]
    return [str(exc)]

