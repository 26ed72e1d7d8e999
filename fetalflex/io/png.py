"""PNG reading and writing. Every PNG written is marked synthetic in its metadata (images,
label maps, pictures), and written atomically with mode ``FILE_MODE``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, PngImagePlugin

from fetalflex.about import SYNTHETIC_NOTICE, __version__
from fetalflex.io.atomic import atomic_write

LABEL_MAP_CONTENT = "fetalflex label map: pixel value = global label id"
PLANE_KEY, FIELD_KEY, GA_KEY = "Plane", "FieldMM", "GAWeeks"  # a label map's facts


def _atomic_save(img: Image.Image, path: Path, pnginfo: PngImagePlugin.PngInfo) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written file."""
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG", pnginfo=pnginfo))


def synthetic_info(extra: dict[str, str] | None = None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Synthetic", "true")
    info.add_text("Description", SYNTHETIC_NOTICE)
    info.add_text("Software", f"fetalflex {__version__}")
    for k, v in (extra or {}).items():
        info.add_text(k, v)
    return info


def write_image(path: Path, image: NDArray[np.uint8], meta: dict[str, str] | None = None) -> None:
    """A synthetic grayscale or RGB image with the synthetic-image text chunks."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image: expected uint8 (H, W) or (H, W, 3), got {image.dtype} "
                         f"{image.shape}")
    _atomic_save(Image.fromarray(image), path, synthetic_info(meta))


def write_label_map(path: Path, label_map: NDArray[np.uint8], plane: str | None = None,
                    field_mm: float | None = None, ga_weeks: float | None = None) -> None:
    """A label map as an 8-bit grayscale PNG whose pixel values are label ids; the facts
    that interpret it (plane, field of view, GA) ride along as text, so a label map written
    here means the same when it is read back as a layout (``read_layout_facts``)."""
    if label_map.dtype != np.uint8 or label_map.ndim != 2:
        raise ValueError(f"label_map: expected uint8 (H, W), got {label_map.dtype} "
                         f"{label_map.shape}")
    facts = {k: v for k, v in ((PLANE_KEY, plane),
                               (FIELD_KEY, None if field_mm is None else repr(float(field_mm))),
                               (GA_KEY, None if ga_weeks is None else repr(float(ga_weeks))))
             if v is not None}
    _atomic_save(Image.fromarray(label_map, mode="L"), path,
                 synthetic_info({"Content": LABEL_MAP_CONTENT, **facts}))


def read_layout_facts(path: Path) -> tuple[float | None, float | None]:
    """(field of view mm, GA weeks) a label-map PNG says of itself (None where it does not)."""
    text = read_text_chunks(path)

    def num(key: str) -> float | None:
        try:
            return float(text[key]) if key in text else None
        except ValueError:
            return None

    return num(FIELD_KEY), num(GA_KEY)


def read_gray(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as im:
        if im.mode not in ("L", "I;16", "I", "RGB", "RGBA", "P", "LA"):
            raise ValueError(f"{path}: unsupported PNG mode {im.mode}")
        return np.asarray(im.convert("L"), dtype=np.uint8)


def read_label_map(path: Path) -> NDArray[np.uint8]:
    """Label ids from an 8/16-bit grayscale or palette PNG (palette indices are ids)."""
    with Image.open(path) as im:
        if im.mode in ("L", "P"):
            arr = np.asarray(im)
        elif im.mode in ("I;16", "I"):
            arr = np.asarray(im).astype(np.int64)
            if arr.max(initial=0) > 255 or arr.min(initial=0) < 0:
                raise ValueError(f"{path}: label ids must be within 0..255")
        else:
            raise ValueError(f"{path}: a label map must be a grayscale or palette PNG, "
                             f"not mode {im.mode}")
    return arr.astype(np.uint8)


def read_text_chunks(path: Path) -> dict[str, str]:
    with Image.open(path) as im:
        return dict(getattr(im, "text", {}))
