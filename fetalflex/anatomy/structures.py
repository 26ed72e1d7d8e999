"""The global, stable table of anatomical structures and their label ids.

This table is the single source of truth for label ids: the phantom simulator, the
model's one-hot layout channels, the exporter, the Triton configs and the gRPC API all
read it (the API serves it as ``vocabulary.json``). Ids are append-only: never renumber
or reuse an id, add new structures at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fetalflex.errors import UnknownStructureError


@dataclass(frozen=True)
class Structure:
    """One anatomical structure (or a shared region such as amniotic fluid)."""

    id: int
    name: str
    display: str
    colour: tuple[int, int, int]


STRUCTURES: Final[tuple[Structure, ...]] = (
    Structure(0, "background", "Outside the scan sector", (0, 0, 0)),
    Structure(1, "maternal_tissue", "Maternal tissue / uterine wall", (120, 90, 70)),
    Structure(2, "amniotic_fluid", "Amniotic fluid", (30, 40, 90)),
    Structure(3, "skull", "Skull", (250, 250, 240)),
    Structure(4, "brain", "Brain parenchyma", (150, 130, 170)),
    Structure(5, "midline_falx", "Midline falx", (255, 220, 0)),
    Structure(6, "cavum_septi_pellucidi", "Cavum septi pellucidi (CSP)", (0, 200, 255)),
    Structure(7, "lateral_ventricle", "Lateral ventricle", (0, 110, 255)),
    Structure(8, "choroid_plexus", "Choroid plexus", (255, 120, 0)),
    Structure(9, "thalami", "Thalami", (200, 60, 160)),
    Structure(10, "third_ventricle", "Third ventricle", (60, 255, 220)),
    Structure(11, "cerebellar_hemispheres", "Cerebellar hemispheres", (110, 200, 70)),
    Structure(12, "vermis", "Cerebellar vermis", (220, 255, 120)),
    Structure(13, "cisterna_magna", "Cisterna magna", (0, 150, 150)),
    Structure(14, "abdominal_wall", "Abdominal wall", (200, 170, 140)),
    Structure(15, "abdomen", "Abdomen (liver, bowel)", (160, 100, 70)),
    Structure(16, "stomach", "Stomach", (40, 120, 255)),
    Structure(17, "umbilical_vein", "Umbilical vein", (255, 60, 60)),
    Structure(18, "spine", "Spine", (255, 255, 255)),
    Structure(19, "aorta", "Abdominal aorta", (220, 20, 60)),
    Structure(20, "thorax", "Thoracic wall", (190, 160, 150)),
    Structure(21, "lungs", "Lungs", (170, 210, 170)),
    Structure(22, "heart", "Heart (myocardium)", (200, 80, 80)),
    Structure(23, "left_ventricle", "Left ventricle", (255, 0, 100)),
    Structure(24, "right_ventricle", "Right ventricle", (0, 90, 200)),
    Structure(25, "left_atrium", "Left atrium", (255, 110, 170)),
    Structure(26, "right_atrium", "Right atrium", (90, 160, 255)),
    Structure(27, "septum", "Interventricular / interatrial septum", (255, 230, 120)),
    Structure(28, "descending_aorta", "Descending aorta", (180, 0, 40)),
    Structure(29, "soft_tissue", "Limb soft tissue", (190, 140, 110)),
    Structure(30, "femur", "Femur", (240, 240, 255)),
    Structure(31, "upper_lip", "Upper lip", (255, 150, 130)),
    Structure(32, "lower_lip", "Lower lip", (230, 110, 100)),
    Structure(33, "nose", "Nose", (250, 190, 150)),
    Structure(34, "nostrils", "Nostrils", (60, 20, 20)),
)

NUM_LABELS: Final[int] = len(STRUCTURES)
BY_NAME: Final[dict[str, Structure]] = {s.name: s for s in STRUCTURES}
BY_ID: Final[dict[int, Structure]] = {s.id: s for s in STRUCTURES}

BACKGROUND: Final[int] = BY_NAME["background"].id
MATERNAL_TISSUE: Final[int] = BY_NAME["maternal_tissue"].id
AMNIOTIC_FLUID: Final[int] = BY_NAME["amniotic_fluid"].id
SHARED_STRUCTURES: Final[tuple[str, ...]] = ("background", "maternal_tissue", "amniotic_fluid")

# "Not labelled here": a pixel whose anatomy the layout does not say (partial anatomy: real
# scans labelled only in part, or a request that draws only some structures). It is not a
# structure and has no layout channel: the model's input there is all zeros, so the model
# draws whatever its training taught it belongs there. It is not "background" (outside the
# scan sector), which is a structure of its own. 255 is the usual "ignore" value of
# segmentation label PNGs and can never collide with an appended structure id.
UNLABELLED: Final[int] = 255
UNLABELLED_NAME: Final[str] = "unlabelled"


def structure(name_or_id: str | int) -> Structure:
    """Look up a structure by name or id; raise a clear error otherwise."""
    if isinstance(name_or_id, bool):
        raise UnknownStructureError("structure", f"{name_or_id!r} is not a name or label id")
    if isinstance(name_or_id, int):
        try:
            return BY_ID[name_or_id]
        except KeyError:
            raise UnknownStructureError(
                "structure", f"label id {name_or_id} is unknown (valid ids are 0..{NUM_LABELS - 1})"
            ) from None
    try:
        return BY_NAME[name_or_id]
    except KeyError:
        raise UnknownStructureError(
            "structure", f"{name_or_id!r} is unknown; known structures: {', '.join(BY_NAME)}"
        ) from None


def label_id(name: str) -> int:
    return structure(name).id


def _check_table() -> None:
    ids = [s.id for s in STRUCTURES]
    if ids != list(range(len(ids))):
        raise AssertionError("structure ids must be 0..N-1 in order")
    if len(BY_NAME) != len(STRUCTURES):
        raise AssertionError("structure names must be unique")


_check_table()
