"""Parametric templates: one random, plausible structure list per plane.

A template is driven by a seed and a gestational age. Sizes come from
:mod:`fetalflex.anatomy.biometry` with individual variation; the sonographer's zoom
(``field_mm``), the position and rotation of the fetus, left/right orientation and
the maternal tissue bands are jittered, so templates are many, not one.

Each plane is drawn in a local frame in millimetres: ``u`` along the main anatomical
axis (anterior for head and trunk, the femoral shaft, the chin for the face), ``v``
across it. :class:`Frame` maps local millimetres to normalized image coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fetalflex.anatomy.biometry import GA_MAX, GA_MIN, Biometry, biometry
from fetalflex.anatomy.layout import Shape, ShapeKind, StructureList
from fetalflex.anatomy.planes import plane as get_plane


@dataclass(frozen=True)
class Frame:
    origin: tuple[float, float]  # normalized image coordinates of local (0, 0)
    phi: float                   # degrees: direction of +u in the image
    vsign: float                 # +1 or -1: mirror of the v axis
    field_mm: float

    def point(self, u: float, v: float) -> tuple[float, float]:
        c, s = math.cos(math.radians(self.phi)), math.sin(math.radians(self.phi))
        dx = u * c - self.vsign * v * s
        dy = u * s + self.vsign * v * c
        return (self.origin[0] + dx / self.field_mm, self.origin[1] + dy / self.field_mm)

    def shape(self, name: str, kind: ShapeKind, u: float, v: float, au: float, av: float,
              alpha: float = 0.0) -> Shape:
        """A shape centred at local (u, v) mm with half-axes (au, av) mm, local angle alpha."""
        return Shape(
            structure=name, kind=kind, center=self.point(u, v),
            axes=(au / self.field_mm, av / self.field_mm),
            angle=(self.phi + self.vsign * alpha) % 360.0,
        )


def _jit(rng: np.random.Generator, sd: float = 0.05) -> float:
    """Multiplicative individual variation, clipped to +/- 2.5 sd."""
    return float(np.clip(1.0 + rng.normal(0.0, sd), 1.0 - 2.5 * sd, 1.0 + 2.5 * sd))


def _maternal(rng: np.random.Generator) -> list[Shape]:
    """Near-field maternal abdominal wall band, and sometimes the posterior uterine wall."""
    depth = rng.uniform(0.10, 0.20)
    ry, rx = rng.uniform(0.5, 1.0), rng.uniform(1.0, 2.0)
    cx = 0.5 + rng.uniform(-0.3, 0.3)
    out = [Shape(structure="maternal_tissue", center=(cx, depth - ry), axes=(rx, ry),
                 angle=rng.uniform(-6, 6))]
    if rng.random() < 0.6:
        top = rng.uniform(0.90, 1.0)
        ry2 = rng.uniform(0.4, 0.9)
        out.append(Shape(structure="maternal_tissue", center=(0.5 + rng.uniform(-0.4, 0.4),
                                                              top + ry2),
                         axes=(rng.uniform(1.0, 2.0), ry2), angle=rng.uniform(-10, 10)))
    return out


def _origin(rng: np.random.Generator, y: float = 0.56) -> tuple[float, float]:
    return (0.5 + rng.uniform(-0.05, 0.05), y + rng.uniform(-0.04, 0.04))


def _head_frame(rng: np.random.Generator, field: float, tilt: float = 25.0) -> Frame:
    phi = rng.uniform(-tilt, tilt) + (180.0 if rng.random() < 0.5 else 0.0)
    vsign = 1.0 if math.cos(math.radians(phi)) > 0 else -1.0  # +v is the far (deeper) side
    return Frame(_origin(rng), phi, vsign, field)


def _head_common(b: Biometry, rng: np.random.Generator) -> tuple[float, float, float, float]:
    bpd = b.bpd * _jit(rng, 0.04)
    ofd = b.ofd * _jit(rng, 0.04)
    a, bb = ofd / 2.0, bpd / 2.0
    t = 1.0 + 0.025 * bpd  # skull thickness (mm)
    field = ofd * rng.uniform(1.35, 1.6)
    return a, bb, t, field


def _skull_brain(f: Frame, a: float, b: float, t: float) -> list[Shape]:
    return [f.shape("skull", "ellipse", 0, 0, a + t, b + t),
            f.shape("brain", "ellipse", 0, 0, a, b)]


def template_tv(b: Biometry, rng: np.random.Generator) -> StructureList:
    a, bb, t, field = _head_common(b, rng)
    f = _head_frame(rng, field)
    atrium = b.atrium * _jit(rng, 0.08)
    csp_w = b.csp_width * _jit(rng, 0.1)
    lv_v = 0.40 * bb
    shapes = [*_maternal(rng), *_skull_brain(f, a, bb, t),
              f.shape("midline_falx", "box", -0.05 * a, 0, 0.88 * a, 0.5),
              f.shape("cavum_septi_pellucidi", "box", 0.36 * a, 0, 0.15 * a, csp_w / 2),
              # body of the lateral ventricle (thin) and its atrium (posterior horn)
              f.shape("lateral_ventricle", "ellipse", 0.02 * a, lv_v * 0.9, 0.42 * a, 1.1, -4),
              f.shape("lateral_ventricle", "ellipse", -0.42 * a, lv_v, 0.2 * a, atrium / 2, 10),
              f.shape("choroid_plexus", "ellipse", -0.40 * a, lv_v, 0.15 * a,
                      0.38 * atrium, 10)]
    return StructureList(plane="TV", field_mm=field, ga_weeks=b.ga_weeks, structures=tuple(shapes))


def template_tt(b: Biometry, rng: np.random.Generator) -> StructureList:
    a, bb, t, field = _head_common(b, rng)
    f = _head_frame(rng, field)
    csp_w = b.csp_width * _jit(rng, 0.1)
    th_a, th_b = 0.20 * a * _jit(rng), 0.15 * bb * _jit(rng)
    shapes = [*_maternal(rng), *_skull_brain(f, a, bb, t),
              f.shape("midline_falx", "box", -0.05 * a, 0, 0.88 * a, 0.5),
              f.shape("cavum_septi_pellucidi", "box", 0.36 * a, 0, 0.14 * a, csp_w / 2),
              f.shape("thalami", "ellipse", -0.06 * a, th_b * 1.15, th_a, th_b, -18),
              f.shape("thalami", "ellipse", -0.06 * a, -th_b * 1.15, th_a, th_b, 18),
              f.shape("third_ventricle", "box", -0.06 * a, 0, th_a * 0.9, 0.9)]
    return StructureList(plane="TT", field_mm=field, ga_weeks=b.ga_weeks, structures=tuple(shapes))


def template_tc(b: Biometry, rng: np.random.Generator) -> StructureList:
    a, bb, t, field = _head_common(b, rng)
    f = _head_frame(rng, field, tilt=30.0)
    csp_w = b.csp_width * _jit(rng, 0.1)
    tcd = b.tcd * _jit(rng, 0.05)
    cm = b.cisterna * _jit(rng, 0.12)
    rh_u, rh_v = 0.21 * tcd, 0.26 * tcd  # one hemisphere's half-axes
    uc = -a + cm + rh_u                   # cerebellum centre: cisterna between it and skull
    th_a, th_b = 0.18 * a, 0.13 * bb
    shapes = [*_maternal(rng), *_skull_brain(f, a, bb, t),
              f.shape("cavum_septi_pellucidi", "box", 0.38 * a, 0, 0.13 * a, csp_w / 2),
              f.shape("thalami", "ellipse", 0.02 * a, th_b * 1.1, th_a, th_b, -18),
              f.shape("thalami", "ellipse", 0.02 * a, -th_b * 1.1, th_a, th_b, 18),
              f.shape("cisterna_magna", "ellipse", uc - rh_u * 0.4, 0, rh_u * 1.4, 0.22 * tcd),
              f.shape("cerebellar_hemispheres", "ellipse", uc, tcd / 2 - rh_v, rh_u, rh_v),
              f.shape("cerebellar_hemispheres", "ellipse", uc, -(tcd / 2 - rh_v), rh_u, rh_v),
              f.shape("vermis", "ellipse", uc, 0, rh_u * 0.95, 0.12 * tcd)]
    return StructureList(plane="TC", field_mm=field, ga_weeks=b.ga_weeks, structures=tuple(shapes))


def _trunk_frame(rng: np.random.Generator, field: float) -> Frame:
    # The spine may lie at any clock position; fetal left may be either side of the image.
    phi = rng.uniform(0.0, 360.0)
    return Frame(_origin(rng, 0.55), phi, 1.0 if rng.random() < 0.5 else -1.0, field)


def template_ac(b: Biometry, rng: np.random.Generator) -> StructureList:
    r = b.ac / (2 * math.pi) * _jit(rng, 0.05)
    field = 2 * r * rng.uniform(1.5, 1.8)
    f = _trunk_frame(rng, field)
    ell = _jit(rng, 0.04)
    wall = 1.2 + 0.03 * r
    shapes = [*_maternal(rng),
              f.shape("abdominal_wall", "ellipse", 0, 0, r * ell, r / ell),
              f.shape("abdomen", "ellipse", 0, 0, r * ell - wall, r / ell - wall),
              f.shape("stomach", "ellipse", 0.05 * r, 0.42 * r, 0.26 * r * _jit(rng, 0.1),
                      0.17 * r * _jit(rng, 0.1), 35),
              f.shape("umbilical_vein", "ellipse", 0.30 * r, -0.06 * r, 0.30 * r, 0.045 * r, 15),
              f.shape("aorta", "ellipse", -0.52 * r, 0.10 * r, 0.055 * r, 0.055 * r),
              f.shape("spine", "ellipse", -0.76 * r, 0, 0.11 * r, 0.10 * r)]
    return StructureList(plane="AC", field_mm=field, ga_weeks=b.ga_weeks, structures=tuple(shapes))


def template_4ch(b: Biometry, rng: np.random.Generator) -> StructureList:
    r = 0.92 * b.ac / (2 * math.pi) * _jit(rng, 0.05)
    field = 2 * r * rng.uniform(1.5, 1.8)
    f = _trunk_frame(rng, field)
    wall = 1.5 + 0.05 * r
    axis = 45.0 + rng.uniform(-12, 12)  # cardiac axis towards fetal left
    hl, hw = 0.56 * r * _jit(rng), 0.42 * r * _jit(rng)
    hu, hv = 0.12 * r, 0.16 * r  # heart centre, anterior and to the left
    ca, sa = math.cos(math.radians(axis)), math.sin(math.radians(axis))

    def heart(name: str, kind: ShapeKind, h: float, w: float, ah: float, aw: float,
              a: float = 0.0) -> Shape:
        # heart-local (h along the long axis base->apex, w towards fetal left)
        return f.shape(name, kind, hu + h * ca - w * sa, hv + h * sa + w * ca, ah, aw, axis + a)

    shapes = [*_maternal(rng),
              f.shape("thorax", "ellipse", 0, 0, r, r * _jit(rng, 0.03)),
              f.shape("lungs", "ellipse", -0.12 * r, 0.38 * r, 0.62 * r, 0.5 * r, 10),
              f.shape("lungs", "ellipse", -0.12 * r, -0.42 * r, 0.62 * r, 0.5 * r, -10),
              f.shape("lungs", "ellipse", -0.05 * r, 0, r - wall, r - wall),
              heart("heart", "ellipse", 0, 0, hl, hw),
              heart("left_atrium", "ellipse", -0.47 * hl, 0.33 * hw, 0.30 * hl, 0.28 * hw),
              heart("right_atrium", "ellipse", -0.47 * hl, -0.34 * hw, 0.31 * hl, 0.30 * hw),
              heart("left_ventricle", "ellipse", 0.26 * hl, 0.30 * hw, 0.50 * hl, 0.26 * hw, 4),
              heart("right_ventricle", "ellipse", 0.20 * hl, -0.32 * hw, 0.46 * hl, 0.28 * hw, -4),
              heart("septum", "box", -0.05 * hl, 0, 0.80 * hl, 0.06 * hw),
              f.shape("descending_aorta", "ellipse", -0.55 * r, 0.12 * r, 0.07 * r, 0.07 * r),
              f.shape("spine", "ellipse", -0.80 * r, 0, 0.11 * r, 0.10 * r)]
    return StructureList(plane="4CH", field_mm=field, ga_weeks=b.ga_weeks,
                         structures=tuple(shapes))


def template_fl(b: Biometry, rng: np.random.Generator) -> StructureList:
    fl = b.fl * _jit(rng, 0.05)
    field = fl * rng.uniform(1.5, 1.8)
    phi = rng.uniform(-15, 15) + (180.0 if rng.random() < 0.5 else 0.0)
    f = Frame(_origin(rng, 0.52), phi, 1.0, field)
    thick = 0.9 + 0.05 * fl
    shapes = [*_maternal(rng),
              f.shape("soft_tissue", "ellipse", 0, 0.05 * fl, fl * 0.62, fl * 0.2 * _jit(rng)),
              f.shape("femur", "box", 0, 0, fl / 2, thick / 2, rng.uniform(-3, 3))]
    return StructureList(plane="FL", field_mm=field, ga_weeks=b.ga_weeks, structures=tuple(shapes))


def template_lip(b: Biometry, rng: np.random.Generator) -> StructureList:
    w = b.lip_width * _jit(rng, 0.06)
    field = w * rng.uniform(2.4, 2.9)
    phi = 90.0 + rng.uniform(-15, 15)  # +u (towards the chin) points down the image
    f = Frame(_origin(rng, 0.50), phi, 1.0, field)
    shapes = [*_maternal(rng),
              f.shape("nose", "ellipse", -0.62 * w, 0, 0.36 * w, 0.40 * w),
              f.shape("nostrils", "ellipse", -0.46 * w, 0.15 * w, 0.07 * w, 0.09 * w),
              f.shape("nostrils", "ellipse", -0.46 * w, -0.15 * w, 0.07 * w, 0.09 * w),
              f.shape("upper_lip", "ellipse", -0.06 * w, 0, 0.17 * w, 0.55 * w),
              f.shape("lower_lip", "ellipse", 0.30 * w, 0, 0.14 * w, 0.44 * w)]
    return StructureList(plane="LIP", field_mm=field, ga_weeks=b.ga_weeks,
                         structures=tuple(shapes))


TEMPLATES: dict[str, Callable[[Biometry, np.random.Generator], StructureList]] = {
    "TV": template_tv, "TT": template_tt, "TC": template_tc, "AC": template_ac,
    "4CH": template_4ch, "FL": template_fl, "LIP": template_lip,
}


def sample_template(plane: str, seed: int, ga_weeks: float | None = None) -> StructureList:
    """A random normal layout of ``plane``; GA is drawn uniformly in the template
    range (``biometry.GA_MIN`` .. ``GA_MAX``) if not given."""
    get_plane(plane)
    rng = np.random.default_rng([seed, 0x7E3])
    ga = float(rng.uniform(GA_MIN, GA_MAX)) if ga_weeks is None else float(ga_weeks)
    return TEMPLATES[plane](biometry(ga), rng)
