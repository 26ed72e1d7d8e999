"""Contact sheet: per plane, phantom image, layout overlay, and an anomaly beside its twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

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


# Text sits in bands of its own, never on an image: a header (title and column names) and a
# label band above each plane's row.
HEADER_PX = 48
ROW_LABEL_PX = 22
FONT_PX = 14
BACKGROUND = (24, 24, 24)


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=px)  # Pillow's bundled font (FreeType builds)
    except (TypeError, OSError, ImportError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def sheet_shape(size: int, scale: int = 2) -> tuple[int, int]:
    """(height, width) of the sheet for tiles of ``size`` px drawn at ``scale``."""
    tile = size * scale
    return HEADER_PX + len(PLANES) * (ROW_LABEL_PX + tile), len(COLUMNS) * tile


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
        labels.append(f"{p.code}: {p.name}  |  preset: {pr.name}")
    tile = size * scale
    height, width = sheet_shape(size, scale)
    im = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(im)
    font = _font(FONT_PX)
    draw.text((4, 6), "SYNTHETIC PHANTOM - NOT FOR DIAGNOSIS", fill=(255, 90, 90), font=font)
    for c, text in enumerate(COLUMNS):
        draw.text((c * tile + tile // 2, HEADER_PX - 4), text, fill=(0, 230, 230), font=font,
                  anchor="md")
    for r, (row, text) in enumerate(zip(rows, labels, strict=True)):
        top = HEADER_PX + r * (ROW_LABEL_PX + tile)
        draw.text((4, top + ROW_LABEL_PX // 2), text, fill=(255, 230, 0), font=font,
                  anchor="lm")
        big = Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale),
                                          Image.Resampling.NEAREST)
        im.paste(big, (0, top + ROW_LABEL_PX))
    return np.asarray(im)


def write_contact_sheet(out: Path, size: int = 128, seed: int = 7) -> Path:
    write_image(out, contact_sheet(size, seed), {"Content": "FetalFlex phantom contact sheet"})
    return out
