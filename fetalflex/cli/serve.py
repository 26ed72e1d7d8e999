"""``fetalflex serve``: run the gRPC service (its flags and server: ``service/``)."""

from __future__ import annotations

import argparse

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    from service.serve_cli import add_serve_arguments

    p = sub.add_parser("serve", help="run the gRPC service (settings: flags > --config JSON > "
                                     "FETALFLEX_* env vars > defaults)")
    add_serve_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.serve_cli import settings_from_args
    from service.server import serve

    serve(settings_from_args(args))
    return 0
