"""Ellipse fitting to outline pixels (Fitzgibbon, Pilu & Fisher 1999, direct least squares,
in Halir & Flusser's numerically stable form) and the ellipse's circumference."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Ellipse:
    """Centre (x, y), half-axes (a >= b) and angle of ``a`` from +x towards +y (degrees)."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def circumference(self) -> float:
        """Ramanujan's second approximation (relative error < 1e-9 for head shapes)."""
        h = ((self.a - self.b) / (self.a + self.b)) ** 2
        return math.pi * (self.a + self.b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def fit_ellipse(xs: NDArray[np.floating], ys: NDArray[np.floating]) -> Ellipse:
    """The ellipse through outline points; ValueError when they do not describe one."""
    if len(xs) < 6:
        raise ValueError(f"an ellipse needs at least 6 outline pixels, got {len(xs)}")
    mx, my = float(np.mean(xs)), float(np.mean(ys))
    sc = float(max(np.std(xs), np.std(ys), 1e-9))
    x, y = (np.asarray(xs, float) - mx) / sc, (np.asarray(ys, float) - my) / sc
    d1 = np.stack([x * x, x * y, y * y], axis=1)
    d2 = np.stack([x, y, np.ones_like(x)], axis=1)
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        raise ValueError("outline pixels are degenerate (on a line)") from None
    m = s1 + s2 @ t
    m = np.array([m[2] / 2, -m[1], m[0] / 2])
    _, evecs = np.linalg.eig(m)
    evecs = np.real(evecs)
    cond = 4 * evecs[0] * evecs[2] - evecs[1] ** 2
    idx = np.nonzero(cond > 0)[0]
    if len(idx) == 0:
        raise ValueError("outline pixels do not describe an ellipse")
    a1 = evecs[:, idx[0]]
    aa, bb, cc = a1
    dd, ee, ff = t @ a1
    # Conic aa x^2 + bb xy + cc y^2 + dd x + ee y + ff = 0 in normalized coordinates.
    den = bb * bb - 4 * aa * cc
    x0 = (2 * cc * dd - bb * ee) / den
    y0 = (2 * aa * ee - bb * dd) / den
    num = 2 * (aa * ee * ee + cc * dd * dd - bb * dd * ee + den * ff)
    root = math.sqrt((aa - cc) ** 2 + bb * bb)
    ax1 = -math.sqrt(abs(num * (aa + cc + root))) / den
    ax2 = -math.sqrt(abs(num * (aa + cc - root))) / den
    if not (math.isfinite(ax1) and math.isfinite(ax2)) or ax1 <= 0 or ax2 <= 0:
        raise ValueError("outline pixels do not describe an ellipse")
    theta = 0.5 * math.atan2(-bb, cc - aa)  # angle of the ax1 axis
    a, b, ang = ax1, ax2, theta
    if b > a:
        a, b, ang = b, a, theta + math.pi / 2
    deg = (math.degrees(ang) + 90.0) % 180.0 - 90.0
    return Ellipse(cx=float(mx + sc * x0), cy=float(my + sc * y0), a=float(sc * a),
                   b=float(sc * b), angle=float(deg))


def ellipse_from_outline(outline: NDArray[np.bool_]) -> Ellipse:
    ys, xs = np.nonzero(outline)
    return fit_ellipse(xs.astype(float), ys.astype(float))
