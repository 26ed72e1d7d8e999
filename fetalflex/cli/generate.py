"""``fetalflex generate``: generate synthetic images (the main job; fetalflex/generate_cli.py
does the work)."""

from __future__ import annotations

import argparse

from fetalflex.cli.args import GENERATE_FIELDS, Subcommands, backend_args, overwrite_arg


def register(sub: Subcommands) -> None:
    from fetalflex.anatomy.layout import DEFAULT_FIELD_MM
    from fetalflex.anatomy.planes import PLANE_CODES, canonical_code
    from fetalflex.anatomy.presets import BY_NAME as PRESET_NAMES
    from fetalflex.record import OUTPUT_FORMATS
    from fetalflex.request_flags import add_request_flags

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
    overwrite_arg(p)
    backend_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fetalflex.generate_cli import run_generate

    return run_generate(args)
