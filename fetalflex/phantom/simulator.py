"""Phantom B-mode simulator: label map -> synthetic fetal ultrasound image.

A convolution model of a curvilinear probe, in beam (polar) coordinates:

1. Label map sampled on the beam grid (depth r x beam angle theta).
2. Reflectivity = diffuse scatterers (Gaussian, amplitude = tissue echogenicity with a
   low-frequency texture) + specular echoes at impedance steps along the beam
   (interfaces facing the probe are bright, those parallel to the beam drop out).
3. RF signal = reflectivity convolved with the point spread function: a Gaussian-
   windowed carrier pulse axially and a Gaussian beam profile laterally.
4. Envelope detection (magnitude of the analytic signal, Hilbert transform along r).
5. Two-way depth attenuation integrated along each beam from per-tissue coefficients,
   with time-gain compensation for average soft tissue. Bone (skull, spine, femur)
   attenuates strongly -> acoustic shadow; fluid weakly -> posterior enhancement.
6. Electronic noise, log compression to a dynamic range, scan conversion back to the
   square image; everything outside the fan is black.

Why NumPy/SciPy and not pymust: pymust simulates point scatterers per transmit with
physical units (accurate, but seconds per image); this separable convolution model
runs in milliseconds, which the 10,000-pair training set on a 2-core machine needs.
Deterministic for a seed. The result is a phantom, not a physical simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, signal

from fetalflex.anatomy.sector import SECTOR, pixel_centres, sector_mask
from fetalflex.phantom.tissue import REFERENCE_ATTENUATION, lookup_tables


@dataclass(frozen=True)
class ProbeSettings:
    axial_oversample: int = 3      # beam-grid depth samples per output pixel
    carrier_period: float = 4.0    # RF carrier period (depth samples): band clear of Nyquist
    pulse_sigma: float = 2.0       # axial Gaussian pulse envelope sd, in depth samples
    beam_sigma: float = 0.9        # lateral beam profile sd, in beam lines
    lines_per_pixel: float = 0.8   # beam lines per output pixel (across the image)
    specular_gain: float = 0.25    # weight of specular echoes at impedance steps
    dynamic_range_db: float = 50.0
    noise_db: float = -53.0        # electronic noise level relative to full white
    tgc: float = REFERENCE_ATTENUATION


@dataclass(frozen=True)
class _Grid:
    nr: int
    nt: int
    lab_index: tuple[NDArray[np.intp], NDArray[np.intp]]  # beam grid -> image pixel
    depth: NDArray[np.float32]                              # (nr,) normalized radius
    scan_coords: NDArray[np.float32]                        # (2, S, S) image -> beam grid
    dr: float


@lru_cache(maxsize=8)
def _grid(size: int, settings: ProbeSettings) -> _Grid:
    nr = round(size * (SECTOR.r_max - SECTOR.r_min) * settings.axial_oversample) + 8
    nt = round(size * settings.lines_per_pixel * 1.3)
    r = np.linspace(SECTOR.r_min - 4 * (SECTOR.r_max - SECTOR.r_min) / (nr - 8),
                    SECTOR.r_max + 4 * (SECTOR.r_max - SECTOR.r_min) / (nr - 8), nr)
    th = np.radians(np.linspace(-SECTOR.half_angle_deg, SECTOR.half_angle_deg, nt))
    rr, tt = np.meshgrid(r, th, indexing="ij")
    x = SECTOR.apex_x + rr * np.sin(tt)
    y = SECTOR.apex_y + rr * np.cos(tt)
    ix = np.clip(np.floor(x * size), 0, size - 1).astype(np.intp)
    iy = np.clip(np.floor(y * size), 0, size - 1).astype(np.intp)
    px, py = pixel_centres(size)
    pr, pth = SECTOR.polar(px, py)
    fr = (pr - r[0]) / (r[1] - r[0])
    ft = (pth - np.degrees(th[0])) / np.degrees(th[1] - th[0])
    coords = np.stack([fr, ft]).astype(np.float32)
    return _Grid(nr, nt, (iy, ix), r.astype(np.float32), coords, float(r[1] - r[0]))


def _pulse(settings: ProbeSettings) -> NDArray[np.float32]:
    half = int(np.ceil(4 * settings.pulse_sigma))
    k = np.arange(-half, half + 1, dtype=np.float64)
    env = np.exp(-0.5 * (k / settings.pulse_sigma) ** 2)
    pulse = env * np.cos(2 * np.pi * k / settings.carrier_period)
    # A transducer passes no DC: remove it, or the Hilbert transform's 1/t tails leak
    # echoes from tissue into the anechoic fluid below it as radial streaks.
    pulse -= env * pulse.sum() / env.sum()
    return pulse.astype(np.float32)


@lru_cache(maxsize=8)
def _unit_median(st: ProbeSettings) -> float:
    """Median envelope of unit-amplitude diffuse scatterers (Rayleigh: 1.177 sigma)."""
    p = _pulse(st).astype(np.float64)
    half = int(np.ceil(4 * st.beam_sigma))
    lat = np.exp(-0.5 * (np.arange(-half, half + 1) / st.beam_sigma) ** 2)
    lat /= lat.sum()
    return float(np.sqrt((p**2).sum() * (lat**2).sum()) * 1.1774)


def simulate_bmode(
    label_map: NDArray[np.uint8],
    seed: int,
    settings: ProbeSettings | None = None,
    gain_db: float | None = None,
) -> NDArray[np.uint8]:
    """Render a label map as a B-mode image (uint8, same size), deterministic for ``seed``."""
    if label_map.ndim != 2 or label_map.shape[0] != label_map.shape[1]:
        raise ValueError(f"label_map: must be square 2-D, got shape {label_map.shape}")
    st = settings or ProbeSettings()
    size = label_map.shape[0]
    g = _grid(size, st)
    tables = lookup_tables()
    rng = np.random.default_rng([seed, 0xB30DE])

    labels = label_map[g.lab_index]  # (nr, nt)
    # Brightness b displays as b after log compression: amplitude 10^((b-1) DR / 20).
    bright = tables["echo"][labels]
    echo = np.where(bright > 0, 10.0 ** ((bright - 1.0) * st.dynamic_range_db / 20.0), 0.0)
    texture = tables["texture"][labels]
    # Low-frequency echogenicity variation (organ texture), shared across tissues.
    # Drawn on the image grid so that blobs are round whatever the beam spacing.
    lf_img = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32),
                                     sigma=size / 48.0)
    lf = lf_img[g.lab_index]
    lf /= lf.std() + 1e-6
    amp = echo * np.clip(1.0 + texture * lf, 0.2, 2.0)
    scat = rng.standard_normal((g.nr, g.nt)).astype(np.float32) * amp

    # Specular echoes: impedance steps along the beam (slightly smoothed).
    z = ndimage.gaussian_filter(tables["impedance"][labels], sigma=(0.7, 0.7))
    spec = np.diff(z, axis=0, prepend=z[:1])
    jitter = 0.6 + 0.4 * rng.random((g.nr, g.nt), dtype=np.float32)
    rf_src = scat + st.specular_gain * spec * jitter

    rf = ndimage.convolve1d(rf_src, _pulse(st), axis=0, mode="constant")
    rf = ndimage.gaussian_filter1d(rf, st.beam_sigma, axis=1, mode="constant")
    env = np.abs(signal.hilbert(rf, axis=0)).astype(np.float32) / _unit_median(st)

    # Two-way attenuation along each beam with time-gain compensation.
    alpha = tables["attenuation"][labels]
    path = np.cumsum(alpha, axis=0) * g.dr
    depth = (g.depth - g.depth[0])[:, None]
    env *= np.exp(-2.0 * (path - st.tgc * depth))
    # Mild lateral roll-off near the fan edges (element directivity).
    th = np.linspace(-1.0, 1.0, g.nt, dtype=np.float32)
    env *= (1.0 - 0.25 * th**4)[None, :]

    # Electronic noise, band-limited like the echoes (no streaks along single lines).
    nz = rng.standard_normal((2, g.nr, g.nt)).astype(np.float32)
    nz = ndimage.gaussian_filter(nz, sigma=(0, st.pulse_sigma, st.beam_sigma))
    nz /= nz.std() + 1e-6
    env = env + 10.0 ** (st.noise_db / 20.0) * np.hypot(nz[0], nz[1]) / 1.18

    gain = rng.uniform(-2.5, 2.5) if gain_db is None else gain_db
    db = 20.0 * np.log10(env + 1e-6) + gain
    img_polar = np.clip((db + st.dynamic_range_db) / st.dynamic_range_db, 0.0, 1.0)

    img = ndimage.map_coordinates(img_polar, g.scan_coords, order=1, mode="constant")
    img[~sector_mask(size)] = 0.0
    return np.round(img * 255.0).astype(np.uint8)
