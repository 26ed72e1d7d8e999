"""Standard fetal ultrasound planes and the structures each one shows.

A plane's ``structures`` tuple is also its paint order (z-order): later structures are
drawn over earlier ones when a structure list is rasterized, and an edited structure is
re-inserted at its own level when a label map is edited. Background (outside the scan
sector) is not in the tuple: where a layout has it, it is always on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from fetalflex.anatomy.structures import SHARED_STRUCTURES, label_id, structure
from fetalflex.errors import InvalidRequestError, UnknownPlaneError


@dataclass(frozen=True)
class Plane:
    code: str
    name: str
    description: str
    structures: tuple[str, ...]  # paint order, shared regions first

    @property
    def label_ids(self) -> tuple[int, ...]:
        return tuple(label_id(s) for s in ("background", *self.structures))

    def z_order(self, name: str) -> int:
        """Paint level of a structure in this plane (higher is drawn later)."""
        try:
            return self.structures.index(name)
        except ValueError:
            raise InvalidRequestError(
                "structure", f"{name!r} is not part of plane {self.code}; "
                f"its structures are: {', '.join(self.structures)}"
            ) from None


_SHARED = SHARED_STRUCTURES[1:]  # maternal tissue, amniotic fluid (background is implicit)

PLANES: Final[tuple[Plane, ...]] = (
    Plane(
        "TV",
        "Transventricular",
        "Axial head plane through the lateral ventricles (atrium with choroid plexus)",
        (*_SHARED, "skull", "brain", "midline_falx", "cavum_septi_pellucidi",
         "lateral_ventricle", "choroid_plexus"),
    ),
    Plane(
        "TT",
        "Transthalamic",
        "Axial head plane through the thalami (biparietal diameter / head circumference)",
        (*_SHARED, "skull", "brain", "midline_falx", "cavum_septi_pellucidi", "thalami",
         "third_ventricle"),
    ),
    Plane(
        "TC",
        "Transcerebellar",
        "Oblique head plane through the cerebellum and cisterna magna",
        (*_SHARED, "skull", "brain", "cavum_septi_pellucidi", "thalami",
         "cisterna_magna", "cerebellar_hemispheres", "vermis"),
    ),
    Plane(
        "AC",
        "Abdominal circumference",
        "Transverse abdomen at the stomach and the intrahepatic umbilical vein",
        (*_SHARED, "abdominal_wall", "abdomen", "stomach", "umbilical_vein", "aorta", "spine"),
    ),
    Plane(
        "4CH",
        "Four-chamber heart",
        "Transverse thorax showing the four cardiac chambers",
        (*_SHARED, "thorax", "lungs", "heart", "left_atrium", "right_atrium",
         "left_ventricle", "right_ventricle", "septum", "descending_aorta", "spine"),
    ),
    Plane(
        "FL",
        "Femur length",
        "Long axis of the femoral diaphysis",
        (*_SHARED, "soft_tissue", "femur"),
    ),
    Plane(
        "LIP",
        "Coronal lips and nose",
        "Coronal view of the upper lip, lower lip, nose and nostrils",
        (*_SHARED, "nose", "nostrils", "upper_lip", "lower_lip"),
    ),
)

BY_CODE: Final[dict[str, Plane]] = {p.code: p for p in PLANES}
PLANE_CODES: Final[tuple[str, ...]] = tuple(BY_CODE)


def canonical_code(value: str) -> str:
    """Planes are case-insensitive ('tv' is TV): the canonical code of ``value``, or
    ``value`` unchanged when it names no plane (the caller's check then reports it)."""
    return next((c for c in PLANE_CODES if c.lower() == value.strip().lower()), value)


def plane(code: str) -> Plane:
    try:
        return BY_CODE[code]
    except KeyError:
        raise UnknownPlaneError(
            "plane", f"{code!r} is unknown; known planes: {', '.join(PLANE_CODES)}"
        ) from None


def plane_index(code: str) -> int:
    """Stable integer index of a plane (the model's plane-embedding id)."""
    plane(code)
    return PLANE_CODES.index(code)


def _check() -> None:
    for p in PLANES:
        for s in p.structures:
            structure(s)
        if len(set(p.structures)) != len(p.structures):
            raise AssertionError(f"plane {p.code} lists a structure twice")


_check()
