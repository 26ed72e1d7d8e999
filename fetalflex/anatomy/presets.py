"""Anomaly presets: named edit lists that turn a normal layout into an abnormal one.

None of these anomalies is in the training data: the model draws them because the
anatomy is an input. Each preset names the structures it changes (``changes``); a
test checks that every changed pixel belonged to, or now belongs to, one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fetalflex.anatomy.edits import (
    Cut,
    Edit,
    Insert,
    Remove,
    Scale,
    Translate,
    apply_edits,
)
from fetalflex.anatomy.layout import Layout
from fetalflex.anatomy.planes import plane as get_plane
from fetalflex.errors import PresetPlaneError, UnknownPresetError

_HEAD_ALL = ("skull", "brain", "midline_falx", "cavum_septi_pellucidi", "lateral_ventricle",
             "choroid_plexus", "thalami", "third_ventricle", "cerebellar_hemispheres",
             "vermis", "cisterna_magna")


@dataclass(frozen=True)
class Preset:
    name: str
    meaning: str
    planes: tuple[str, ...]
    changes: tuple[str, ...]  # structures whose pixels may change
    build: Callable[[str], list[Edit]]

    def edits(self, plane: str) -> list[Edit]:
        if plane not in self.planes:
            raise PresetPlaneError(
                "preset", f"{self.name!r} applies to plane(s) {', '.join(self.planes)}, "
                f"not to plane {plane}"
            )
        return self.build(plane)


def _head_in(plane: str) -> tuple[str, ...]:
    p = get_plane(plane)
    return tuple(s for s in _HEAD_ALL if s in p.structures)


PRESETS: Final[tuple[Preset, ...]] = (
    Preset(
        "ventriculomegaly",
        "Mild-moderate ventriculomegaly: lateral ventricle atrium 10-15 mm (normal < 10 mm)",
        ("TV",), ("lateral_ventricle", "brain"),
        lambda p: [Scale(structures=("lateral_ventricle",), factor=(1.35, 1.85),
                         within=("brain",))],
    ),
    Preset(
        "hydrocephalus",
        "Severe ventriculomegaly (hydrocephalus): atrium > 15 mm, thinned brain mantle, "
        "dangling choroid plexus",
        ("TV",), ("lateral_ventricle", "brain", "midline_falx"),
        lambda p: [Scale(structures=("lateral_ventricle",), factor=(1.7, 3.0),
                         within=("brain",))],
    ),
    Preset(
        "absent_csp",
        "Absent cavum septi pellucidi (e.g. septo-optic dysplasia, agenesis of the corpus "
        "callosum)",
        ("TV", "TT", "TC"), ("cavum_septi_pellucidi",),
        lambda p: [Remove(structure="cavum_septi_pellucidi")],
    ),
    Preset(
        "enlarged_cisterna_magna",
        "Enlarged cisterna magna (> 10 mm), as in mega cisterna magna / Dandy-Walker spectrum",
        ("TC",), ("cisterna_magna", "cerebellar_hemispheres", "vermis", "brain"),
        lambda p: [
            Translate(structures=("cerebellar_hemispheres", "vermis"), toward="thalami",
                      distance_mm=3.0, within=("brain", "cisterna_magna")),
            Scale(structures=("cisterna_magna",), factor=(1.5, 2.3),
                  within=("brain", "cisterna_magna")),
        ],
    ),
    Preset(
        "microcephaly",
        "Microcephaly: head circumference far below the mean for gestational age",
        ("TV", "TT", "TC"), _HEAD_ALL,
        lambda p: [Scale(structures=_head_in(p), factor=0.72, about="group")],
    ),
    Preset(
        "ventricular_septal_defect",
        "Ventricular septal defect: a gap in the interventricular septum",
        ("4CH",), ("septum",),
        lambda p: [Cut(structure="septum", anchor="left_ventricle", width_frac=0.16)],
    ),
    Preset(
        "hypoplastic_left_heart",
        "Hypoplastic left heart: small, thick-walled left ventricle",
        ("4CH",), ("left_ventricle",),
        lambda p: [Scale(structures=("left_ventricle",), factor=(0.55, 0.35), fill="heart")],
    ),
    Preset(
        "double_bubble",
        "Double bubble (duodenal atresia): dilated stomach and a second fluid bubble "
        "(duodenum) towards the midline",
        ("AC",), ("stomach",),
        lambda p: [
            Scale(structures=("stomach",), factor=1.15, within=("abdomen",)),
            Insert(structure="stomach", anchor="stomach", toward="abdomen", fraction=1.05,
                   size_rel=0.7, within=("abdomen",)),
        ],
    ),
    Preset(
        "short_femur",
        "Short femur: femur length far below the mean for gestational age (skeletal dysplasia, "
        "growth restriction)",
        ("FL",), ("femur",),
        lambda p: [Scale(structures=("femur",), factor=(0.62, 1.0))],
    ),
    Preset(
        "cleft_lip",
        "Unilateral cleft lip: a gap through the upper lip beside the midline",
        ("LIP",), ("upper_lip",),
        lambda p: [Cut(structure="upper_lip", width_frac=0.12, offset=0.3,
                       fill="amniotic_fluid")],
    ),
)

BY_NAME: Final[dict[str, Preset]] = {p.name: p for p in PRESETS}


def preset(name: str) -> Preset:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnknownPresetError(
            "preset", f"{name!r} is unknown; known presets: {', '.join(BY_NAME)}"
        ) from None


def presets_for(plane: str) -> list[Preset]:
    return [p for p in PRESETS if plane in p.planes]


def apply_preset(layout: Layout, name: str) -> Layout:
    pr = preset(name)
    out = apply_edits(layout, pr.edits(layout.plane))
    out.meta["preset"] = name
    return out
