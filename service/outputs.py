"""Encoding of generated images for responses: PNG, DICOM (Secondary Capture), raw float32.

Every encoding says the image is synthetic: PNG text chunks, DICOM ConversionType SYN with
a DerivationDescription naming the model, and no real patient attributes. The DICOM writer
and the PNG encoders are the library's (``fetalflex.io.dicom``, ``fetalflex.io.png``: the
CLI writes the same bytes), re-exported here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fetalflex.io import pixels
from fetalflex.io.dicom import (
    SECONDARY_CAPTURE,
    SyntheticStudy,
    dicom_bytes,
    dicom_pair,
    new_uid,
)
from fetalflex.io.png import label_png_bytes, png_bytes

__all__ = ["SECONDARY_CAPTURE", "SyntheticStudy", "dicom_bytes", "dicom_pair",
           "label_png_bytes", "new_uid", "png_bytes", "raw_float32"]


def raw_float32(image: NDArray[np.uint8]) -> bytes:
    return pixels.to_unit(image).astype("<f4").tobytes()
