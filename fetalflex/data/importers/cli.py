"""``fetalflex import hc18|fpdb|folder|merge``: bring real scans into our manifest format."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from fetalflex.data.importers.split import DEFAULT_VAL_FRACTION


def _report(out: Path) -> int:
    rep = json.loads((out / "import_report.json").read_text())
    print(json.dumps(rep, indent=2))
    print(f"wrote {out / 'manifest.jsonl'}")
    return 0


def _cmd_hc18(args: argparse.Namespace) -> int:
    from fetalflex.data.importers.hc18 import import_hc18

    return _report(import_hc18(Path(args.dir), Path(args.out), args.size, args.val_fraction,
                               args.overwrite, args.limit, sector=not args.no_sector))


def _cmd_fpdb(args: argparse.Namespace) -> int:
    from fetalflex.data.importers.fpdb import import_fpdb

    return _report(import_fpdb(Path(args.dir), Path(args.out), args.size, args.val_fraction,
                               args.overwrite, args.limit, sector=not args.no_sector))


def _cmd_folder(args: argparse.Namespace) -> int:
    from fetalflex.data.importers.folder import import_folder

    return _report(import_folder(Path(args.csv), Path(args.out), args.size, args.source,
                                 args.credit, args.val_fraction, args.overwrite,
                                 sector=not args.no_sector))


def _cmd_merge(args: argparse.Namespace) -> int:
    from fetalflex.data.manifest import Record, read_manifest, resolve, write_manifest

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    merged: list[Record] = []
    for m in args.manifests:
        path = Path(m)
        for r in read_manifest(path, check_files=False):
            img = os.path.relpath(resolve(path.parent, r.image).resolve(), out.parent.resolve())
            lab = os.path.relpath(resolve(path.parent, r.label_map).resolve(),
                                  out.parent.resolve())
            merged.append(r.model_copy(update={"image": img, "label_map": lab}))
    write_manifest(out, merged)
    print(f"wrote {out}: {len(merged)} records from {len(args.manifests)} manifests")
    return 0


def add_import_parser(sub: Any, model_size: int) -> None:
    p = sub.add_parser("import", help="import real scans (HC18, FETAL_PLANES_DB, a folder) "
                                      "into a manifest at the model's size")
    isub = p.add_subparsers(dest="source_kind", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--out", required=True, help="folder to write (images/, labels/, "
                                                    "manifest.jsonl, import_report.json)")
        q.add_argument("--size", type=int, default=model_size,
                       help="square side in pixels (the model's; scans are letterboxed)")
        q.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                       help="share of subjects held out for validation (split by subject)")
        q.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
        q.add_argument("--no-sector", action="store_true",
                       help="leave the black outside of the imaged sector unlabelled (default: "
                            "label it background, found from the image: "
                            "fetalflex/data/importers/sector.py)")

    q = isub.add_parser("hc18", help="the HC18 challenge layout (training_set/ + CSV)")
    q.add_argument("dir", help="folder holding training_set/ and "
                               "training_set_pixel_size_and_HC.csv")
    q.add_argument("--limit", type=int, default=None, help="first N rows only (a trial run)")
    common(q)
    q.set_defaults(func=_cmd_hc18)

    q = isub.add_parser("fpdb", help="the FETAL_PLANES_DB layout (Images/ + CSV)")
    q.add_argument("dir", help="folder holding Images/ and FETAL_PLANES_DB_data.csv")
    q.add_argument("--limit", type=int, default=None, help="first N rows only (a trial run)")
    common(q)
    q.set_defaults(func=_cmd_fpdb)

    q = isub.add_parser("folder", help="your own scans: a CSV with image,plane "
                                       "[,label_map,subject,pixel_size_mm,ga_weeks]")
    q.add_argument("csv", help="the CSV (paths in it are relative to its folder)")
    q.add_argument("--source", default="user", help="a name for the data set (file names, "
                                                     "the split's hash, the report)")
    q.add_argument("--credit", default="the user's own scans",
                   help="attribution written into every imported PNG")
    common(q)
    q.set_defaults(func=_cmd_folder)

    q = isub.add_parser("merge", help="one manifest from several (e.g. real + phantom)")
    q.add_argument("manifests", nargs="+")
    q.add_argument("--out", required=True, help="manifest.jsonl to write")
    q.set_defaults(func=_cmd_merge)
