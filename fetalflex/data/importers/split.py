"""Train / validation split by subject: every frame of one subject on one side.

A subject's side is decided by a hash of (data set, subject id) alone, so it never moves
when other subjects are added or removed, and re-importing gives the same split. The share
of subjects in validation is ``val_fraction`` (in expectation; the report prints the count).
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "val"]
DEFAULT_VAL_FRACTION = 0.2


def subject_split(dataset: str, subject: str, val_fraction: float = DEFAULT_VAL_FRACTION,
                  ) -> Split:
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction: must be within [0, 1], got {val_fraction}")
    h = hashlib.sha256(f"{dataset}:{subject}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    return "val" if u < val_fraction else "train"
