"""Encoding of generated images for responses: PNG, DICOM (Secondary Capture), raw float32.

Every encoding says the image is synthetic: PNG text chunks, DICOM ConversionType SYN with
a DerivationDescription naming the model, and no real patient attributes. The DICOM writer
is the library's (``fetalflex.io.dicom``: the CLI writes the same files), re-exported here.
"""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from fetalflex.io import pixels
from fetalflex.io.dicom import (
    SECONDARY_CAPTURE,
    SyntheticStudy,
    dicom_bytes,
    dicom_pair,
    new_uid,
)
from fetalflex.io.png import LABEL_MAP_CONTENT, SYNTHETIC, Provenance, synthetic_info

__all__ = ["SECONDARY_CAPTURE", "SyntheticStudy", "dicom_bytes", "dicom_pair",
           "label_png_bytes", "new_uid", "png_bytes", "raw_float32"]


def png_bytes(image: NDArray[np.uint8], meta: dict[str, str] | None = None,
              provenance: Provenance = SYNTHETIC) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", pnginfo=synthetic_info(
        meta, provenance, int(image.shape[0] * image.shape[1])))
    return buf.getvalue()


def label_png_bytes(label_map: NDArray[np.uint8]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(label_map, mode="L").save(
        buf, format="PNG", pnginfo=synthetic_info({"Content": LABEL_MAP_CONTENT}))
    return buf.getvalue()


def raw_float32(image: NDArray[np.uint8]) -> bytes:
    return pixels.to_unit(image).astype("<f4").tobytes()
