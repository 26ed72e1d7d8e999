"""Contact sheet: per plane, phantom image, layout overlay, and an anomaly beside its twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

from fetalflex.anatomy.layout import rasterize
from fetalflex.anatomy.planes import PLANES
from fetalflex.anatomy.presets import apply_preset, presets_for
from fetalflex.anatomy.render import overlay
from fetalflex.anatomy.templates import sample_template
from fetalflex.io.png import write_image
from fetalflex.phantom.simulator import simulate_bmode

COLUMNS = ("phantom", "layout overlay", "normal twin", "abnormal (preset)", "abnormal layout")


def _rgb(gray: NDArray[np.uint8]) -> NDArray[np.uint8]:
    return np.repeat(gray[..., None], 3, axis=2)


def contact_sheet(size: int = 128, seed: int = 7, scale: int = 2) -> NDArray[np.uint8]:
    rows: list[NDArray[np.uint8]] = []
    labels: list[str] = []
    for i, p in enumerate(PLANES):
        layout = rasterize(sample_template(p.code, seed + i), size)
        img = simulate_bmode(layout.label_map, seed + i)
        pr = presets_for(p.code)[0]
        twin_seed = seed + 100 + i
        twin = rasterize(sample_template(p.code, twin_seed), size)
        ab = apply_preset(twin, pr.name)
        # Same speckle seed for the pair: only the anatomy differs.
        twin_img = simulate_bmode(twin.label_map, twin_seed)
        ab_img = simulate_bmode(ab.label_map, twin_seed)
        rows.append(np.concatenate([
            _rgb(img), overlay(img, layout.label_map), _rgb(twin_img), _rgb(ab_img),
            overlay(ab_img, ab.label_map)], axis=1))
        labels.append(f"{p.code}: {p.name} | preset: {pr.name}")
    sheet = np.concatenate(rows, axis=0)
    im = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale),
                                       Image.NEAREST)
    draw = ImageDraw.Draw(im)
    tile = size * scale
    for r, text in enumerate(labels):
        draw.text((4, r * tile + 2), text, fill=(255, 255, 0))
    for c, text in enumerate(COLUMNS):
        draw.text((c * tile + 4, im.height - 12), text, fill=(0, 255, 255))
    draw.text((im.width - 330, 2), "SYNTHETIC PHANTOM - NOT FOR DIAGNOSIS", fill=(255, 80, 80))
    return np.asarray(im)


def write_contact_sheet(out: Path, size: int = 128, seed: int = 7) -> Path:
    write_image(out, contact_sheet(size, seed), {"Content": "FetalFlex phantom contact sheet"})
    return out
