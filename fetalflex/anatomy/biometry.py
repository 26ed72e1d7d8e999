"""Fetal size by gestational age (GA, weeks), used to scale the plane templates.

Medians are rounded readings of published growth trends (Hadlock-style charts for
BPD, HC, AC and FL; the transverse cerebellar diameter in mm is close to GA in weeks;
the atrial width of the lateral ventricle stays near 6-7 mm and is normally < 10 mm;
the cisterna magna is 2-10 mm). They guide a phantom, they are not a clinical chart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fetalflex.errors import InvalidRequestError

# The template range: gestational ages the table below covers, so the ages a template can
# be drawn at (and a request may ask a template for).
GA_MIN, GA_MAX = 18.0, 32.0
# The accepted range: the age a given layout or a data record may carry (the denoiser's
# condition takes any age; real data reaches beyond the templates' range).
GA_ACCEPTED_MIN, GA_ACCEPTED_MAX = 10.0, 45.0

_GA = np.array([18, 20, 22, 24, 26, 28, 30, 32], dtype=np.float64)
_TABLE_MM: dict[str, list[float]] = {
    "bpd": [41, 47, 53, 59, 65, 71, 76, 81],          # biparietal diameter
    "hc": [154, 175, 197, 219, 240, 260, 278, 294],    # head circumference
    "ac": [130, 151, 174, 197, 219, 240, 260, 280],    # abdominal circumference
    "fl": [27, 33, 38, 43, 48, 53, 57, 61],            # femur length
    "tcd": [18, 20, 22, 24, 26.5, 29, 31.5, 34],       # transverse cerebellar diameter
    "atrium": [6.2, 6.4, 6.5, 6.6, 6.7, 6.8, 6.9, 7.0],  # lateral ventricle atrial width
    "csp_width": [3.2, 3.8, 4.3, 4.8, 5.2, 5.5, 5.7, 5.8],
    "cisterna": [3.6, 4.2, 4.8, 5.3, 5.7, 6.0, 6.3, 6.5],
    "lip_width": [13, 15, 17.5, 20, 22.5, 25, 27.5, 30],  # mouth (commissure) width
}


@dataclass(frozen=True)
class Biometry:
    """Median sizes in mm at one gestational age."""

    ga_weeks: float
    bpd: float
    hc: float
    ac: float
    fl: float
    tcd: float
    atrium: float
    csp_width: float
    cisterna: float
    lip_width: float

    @property
    def ofd(self) -> float:
        """Occipito-frontal diameter from HC and BPD (HC ~ pi * (BPD + OFD) / 2)."""
        return 2.0 * self.hc / np.pi - self.bpd


def biometry(ga_weeks: float) -> Biometry:
    if not GA_MIN <= ga_weeks <= GA_MAX:
        raise InvalidRequestError("ga_weeks",
                                  f"must be between {GA_MIN} and {GA_MAX}, got {ga_weeks}")
    vals = {k: float(np.interp(ga_weeks, _GA, v)) for k, v in _TABLE_MM.items()}
    return Biometry(ga_weeks=ga_weeks, **vals)
