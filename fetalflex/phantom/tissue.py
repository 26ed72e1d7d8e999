"""Acoustic properties of each structure for the phantom B-mode simulator.

Values are relative, tuned by eye against how real fetal ultrasound looks: fluid is
anechoic, brain is hypoechoic, bone is bright with a shadow behind it, choroid plexus
and vermis are echogenic. ``attenuation`` is in nepers per normalized depth unit
(the fan is ~0.9 units deep); the time-gain compensation removes
``REFERENCE_ATTENUATION``, so tissue that attenuates less than that (fluid) brightens
what lies behind it (posterior enhancement) and bone darkens it (acoustic shadow).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from fetalflex.anatomy.structures import NUM_LABELS, STRUCTURES


@dataclass(frozen=True)
class Tissue:
    echo: float         # displayed brightness of diffuse speckle (0 black .. 1 white)
    attenuation: float  # nepers per normalized depth unit (one way)
    impedance: float    # relative acoustic impedance (specular echoes at steps)
    texture: float = 0.25  # strength of low-frequency echogenicity variation


FLUID = Tissue(echo=0.0, attenuation=0.15, impedance=1.50, texture=0.0)
BLOOD = Tissue(echo=0.04, attenuation=0.2, impedance=1.52, texture=0.0)

TISSUES: Final[dict[str, Tissue]] = {
    "background": Tissue(0.0, 0.0, 1.6, 0.0),
    "maternal_tissue": Tissue(0.62, 1.4, 1.65, 0.5),
    "amniotic_fluid": FLUID,
    "skull": Tissue(0.88, 18.0, 3.2, 0.05),
    "brain": Tissue(0.33, 0.9, 1.58, 0.15),
    "midline_falx": Tissue(0.80, 1.5, 1.75, 0.1),
    "cavum_septi_pellucidi": FLUID,
    "lateral_ventricle": FLUID,
    "choroid_plexus": Tissue(0.78, 1.3, 1.72, 0.15),
    "thalami": Tissue(0.38, 1.0, 1.60, 0.25),
    "third_ventricle": FLUID,
    "cerebellar_hemispheres": Tissue(0.45, 1.0, 1.61, 0.3),
    "vermis": Tissue(0.76, 1.2, 1.70, 0.2),
    "cisterna_magna": FLUID,
    "abdominal_wall": Tissue(0.62, 1.3, 1.66, 0.3),
    "abdomen": Tissue(0.46, 1.1, 1.62, 0.3),
    "stomach": FLUID,
    "umbilical_vein": BLOOD,
    "spine": Tissue(1.05, 45.0, 3.5, 0.05),
    "aorta": BLOOD,
    "thorax": Tissue(0.66, 2.5, 1.75, 0.45),
    "lungs": Tissue(0.58, 1.1, 1.64, 0.3),
    "heart": Tissue(0.52, 1.1, 1.65, 0.2),
    "left_ventricle": BLOOD,
    "right_ventricle": BLOOD,
    "left_atrium": BLOOD,
    "right_atrium": BLOOD,
    "septum": Tissue(0.62, 1.2, 1.70, 0.1),
    "descending_aorta": BLOOD,
    "soft_tissue": Tissue(0.52, 1.1, 1.62, 0.4),
    "femur": Tissue(1.05, 60.0, 3.6, 0.05),
    "upper_lip": Tissue(0.55, 1.1, 1.64, 0.3),
    "lower_lip": Tissue(0.55, 1.1, 1.64, 0.3),
    "nose": Tissue(0.58, 1.2, 1.66, 0.3),
    "nostrils": Tissue(0.02, 0.2, 1.50, 0.0),
}

REFERENCE_ATTENUATION: Final[float] = 1.0


def _column(attr: str) -> NDArray[np.float32]:
    return np.array([getattr(TISSUES[s.name], attr) for s in STRUCTURES], dtype=np.float32)


def lookup_tables() -> dict[str, NDArray[np.float32]]:
    """Per-label-id arrays of each property (index with a label map)."""
    missing = [s.name for s in STRUCTURES if s.name not in TISSUES]
    if missing:
        raise KeyError(f"tissue properties missing for structures: {missing}")
    tables = {a: _column(a) for a in ("echo", "attenuation", "impedance", "texture")}
    assert all(len(t) == NUM_LABELS for t in tables.values())
    return tables
