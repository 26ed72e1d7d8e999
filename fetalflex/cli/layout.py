"""``fetalflex layout``: a colour picture of a template layout (and its label map)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fetalflex.cli.args import SIZE_HELP, Subcommands, ga_help, model_size


def register(sub: Subcommands) -> None:
    from fetalflex.anatomy.planes import PLANE_CODES, canonical_code
    from fetalflex.anatomy.presets import BY_NAME as PRESET_NAMES

    p = sub.add_parser("layout", help="render a colour picture of a template layout")
    p.add_argument("--plane", required=True, choices=PLANE_CODES, type=canonical_code)
    p.add_argument("--preset", choices=sorted(PRESET_NAMES), type=str.lower)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ga", type=float, default=None, help=ga_help())
    p.add_argument("--size", type=int, default=model_size(), help=SIZE_HELP)
    p.add_argument("--out", required=True, help="colour PNG to write")
    p.add_argument("--label-map", help="also write the label-id PNG here")
    p.add_argument("--structures", help="also write the extracted structure list JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fetalflex.anatomy.compose import render_anatomy
    from fetalflex.anatomy.render import colourize
    from fetalflex.io.png import write_image, write_label_map

    # the composition the service's RenderLayout answers (one path for both)
    layout, shapes = render_anatomy(args.plane, args.size, seed=args.seed, ga_weeks=args.ga,
                                    preset=args.preset)
    out = Path(args.out)
    write_image(out, colourize(layout.label_map),
                {"Content": "FetalFlex layout (colour picture)", "Plane": args.plane})
    if args.label_map:
        write_label_map(Path(args.label_map), layout.label_map, layout.plane,
                        layout.field_mm, layout.ga_weeks)
    if args.structures:
        Path(args.structures).write_text(shapes.model_dump_json(indent=2) + "\n")
    present = sorted(int(v) for v in np.unique(layout.label_map))
    ga = "unknown" if layout.ga_weeks is None else f"{layout.ga_weeks:.1f} w"
    print(f"wrote {out} (plane {args.plane}, GA {ga}, field {layout.field_mm:.1f} mm, "
          f"label ids {present})")
    return 0
