"""``fetalflex dataset run|merge|plan``: the sub-commands and their flags.

``run --target`` makes the items with a running service; that maker speaks the service's
gRPC API, so it lives in ``service/`` and the ``fetalflex`` entry point passes it in
(``add_dataset_command(sub, service_maker)``): this package never imports the service.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from fetalflex.dataset.makers import Maker
from fetalflex.dataset.spec import SpecError, load_spec
from fetalflex.request import DEFAULT_PRECISION, PRECISIONS

DEFAULT_CONCURRENCY = 4  # requests in flight against a service
DEFAULT_TIMEOUT_S = 300.0  # per request to a service

# The maker of ``run --target``: (the parsed flags, requests in flight) -> a Maker.
ServiceMakerFactory = Callable[[argparse.Namespace, int], Maker]


def _fail(command: str, lines: list[str]) -> int:
    for line in lines:
        print(f"fetalflex dataset {command}: error: {line}", file=sys.stderr)
    return 2


def _cmd_run(args: argparse.Namespace, service_maker: ServiceMakerFactory) -> int:
    from fetalflex.dataset.makers import LocalMaker
    from fetalflex.dataset.plan import parse_shard
    from fetalflex.dataset.runner import run

    try:
        spec = load_spec(Path(args.spec))
    except SpecError as exc:
        return _fail("run", exc.lines)
    shard_of = parse_shard(args.shard) if args.shard else (0, 1)
    if args.target is None and args.concurrency is not None:
        raise ValueError("--concurrency: only with --target (in-process generation runs one "
                         "item at a time; --threads sets its CPU threads)")
    if args.target is not None and (args.weights or args.threads
                                    or args.precision != DEFAULT_PRECISION):
        raise ValueError("--weights/--threads/--precision: the service at --target uses its "
                         "own model")

    def new_maker() -> Maker:
        if args.target is None:
            return LocalMaker(args.backend, Path(args.weights) if args.weights else None,
                              args.threads, args.precision)
        return service_maker(args, args.concurrency or DEFAULT_CONCURRENCY)

    out = Path(args.out)
    try:
        rep = run(spec, out, new_maker, shard_of, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"fetalflex dataset run: interrupted; every item written so far is complete. "
              f"Run the same command again to make the rest into {out}.", file=sys.stderr)
        return 130
    rate = f", {rep.items_per_s:.3f} items/s" if rep.items_per_s else ""
    where = f" (shard {shard_of[0]}/{shard_of[1]}: {rep.mine} items)" if shard_of[1] > 1 else ""
    print(f"dataset {spec.name}{where}: made {rep.made} item(s) in {rep.seconds:.1f} s{rate}; "
          f"{rep.planned - rep.missing} of {rep.planned} present in {out}")
    if rep.summary is not None:
        c = rep.summary["counts"]
        print(f"complete: {out / 'manifest.jsonl'} ({c['manifest_lines']} images, "
              f"{c['pairs']} pairs), summary.json, contact_sheet.png")
    else:
        print(f"{rep.missing} item(s) still missing: the shard(s) that make them complete the "
              f"data set (or 'fetalflex dataset merge --out {out} SHARD_DIR...')")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from fetalflex.dataset.assemble import finalize, merge, read_spec

    out = Path(args.out)
    copied, left = merge(out, [Path(s) for s in args.sources])
    if left:
        ids = ", ".join(it.id for it in left[:5])
        raise ValueError(f"{len(left)} item(s) are in no shard yet ({ids}"
                         f"{', ...' if len(left) > 5 else ''}); make them (dataset run "
                         f"--shard ...) and merge again")
    summary = finalize(out, read_spec(out))
    print(f"merged {copied} item(s) into {out}: {summary['counts']['items']} items, "
          f"{summary['counts']['manifest_lines']} images in manifest.jsonl")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from fetalflex.dataset.plan import parse_shard, plan, shard

    try:
        spec = load_spec(Path(args.spec))
    except SpecError as exc:
        return _fail("plan", exc.lines)
    items = plan(spec)
    if args.shard:
        items = shard(items, *parse_shard(args.shard))
    counts = Counter((it.plane, it.group + (" (pairs)" if it.pair else "")) for it in items)
    if args.json:
        print(json.dumps([{"id": it.id, "seed": it.seed,
                           "request": json.loads(it.request.model_dump_json())}
                          for it in items], indent=1))
        return 0
    for (p, g), n in counts.items():
        print(f"{p:4s} {g:32s} {n:6d}")
    print(f"{len(items)} items; images {sum(2 if it.pair else 1 for it in items)}; "
          f"spec sha256 {spec.sha256()[:16]}")
    return 0


def add_dataset_command(sub: Any, service_maker: ServiceMakerFactory) -> None:
    """Register ``fetalflex dataset`` on the main parser's sub-commands; ``service_maker``
    builds the maker of ``run --target`` (the entry point's, from ``service/``)."""
    from fetalflex.request import DEFAULT_BACKEND, IN_PROCESS_BACKENDS

    p = sub.add_parser("dataset", help="labelled synthetic data sets from one spec file "
                                       "(resumable, shardable; docs/DATASETS.md)")
    fmt = p.formatter_class
    dsub = p.add_subparsers(dest="dataset_command", required=True)

    r = dsub.add_parser("run", formatter_class=fmt,
                        help="make the data set a spec describes (or what is missing of it)")
    r.add_argument("spec", help="the spec, .yaml/.yml or .json")
    r.add_argument("--out", required=True, help="the data set directory (rerun to resume)")
    r.add_argument("--shard", help="i/N: make every N-th item from item i (0 <= i < N)")
    r.add_argument("--backend", default=DEFAULT_BACKEND, choices=IN_PROCESS_BACKENDS,
                   help="in-process backend when no --target is given")
    r.add_argument("--weights", help="denoiser weights folder (default: the shipped ones)")
    r.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                   help="arithmetic of the embedded graph (in-process only)")
    r.add_argument("--threads", type=int, default=None, help="CPU threads in-process")
    from fetalflex.cli_common import connection_args

    connection_args(r, token=True)
    r.set_defaults(target=None)  # no --target: generate in this process
    for a in r._actions:
        if a.dest == "target":
            a.help = "a running service (host:port); without it, generate in this process"
    r.add_argument("--concurrency", type=int, default=None,
                   help=f"requests in flight with --target (default {DEFAULT_CONCURRENCY})")
    r.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help="seconds per request with --target")
    r.add_argument("--quiet", action="store_true", help="no progress bar (none either when "
                                                        "stderr is not a terminal)")
    r.set_defaults(func=partial(_cmd_run, service_maker=service_maker))

    m = dsub.add_parser("merge", formatter_class=fmt,
                        help="bring shard directories into one data set (or assemble a "
                             "shared directory)")
    m.add_argument("--out", required=True)
    m.add_argument("sources", nargs="*", help="shard directories of the same spec")
    m.set_defaults(func=_cmd_merge)

    c = dsub.add_parser("plan", formatter_class=fmt,
                        help="validate a spec and list its items (no model needed)")
    c.add_argument("spec")
    c.add_argument("--shard", help="i/N")
    c.add_argument("--json", action="store_true", help="every item's id, seed and request")
    c.set_defaults(func=_cmd_plan)
