"""``fetalflex load``: bounded load against a running service (p50/p95)."""

from __future__ import annotations

import argparse
import json
import sys

from fetalflex.cli.args import Subcommands
from fetalflex.cli_common import connection_args


def register(sub: Subcommands) -> None:
    p = sub.add_parser("load", help="bounded load against a running service (p50/p95)")
    connection_args(p, token=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--steps", type=int, default=None,
                   help="sampler steps (default: unset, what the served weights recommend)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
