"""``fetalflex planes``: the planes, structures, label ids and presets."""

from __future__ import annotations

import argparse
import json

from fetalflex.cli.args import Subcommands


def register(sub: Subcommands) -> None:
    p = sub.add_parser("planes", help="list planes, structures, label ids and presets")
    p.add_argument("--json", action="store_true", help="print the vocabulary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
