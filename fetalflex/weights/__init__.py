"""The shipped weights (see MODEL_CARD.md): where they are, one place."""

from pathlib import Path

# The default denoiser (v3, phantom appearance only).
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "denoiser"
# The real-appearance denoiser (v6: phantom + real appearances, fine-tuned from v3 on
# public real scans); opt-in with --weights until it meets its targets.
REAL_WEIGHTS = Path(__file__).resolve().parent / "denoiser_real"
# A 4-row student of v3 (fetalflex distill; opt-in until it holds v3's quality).
STUDENT_WEIGHTS = Path(__file__).resolve().parent / "denoiser_student"
# A 4-row student of the real-appearance v6 (both appearances; opt-in, MODEL_CARD.md).
REAL_STUDENT_WEIGHTS = Path(__file__).resolve().parent / "denoiser_real_student"
DEFAULT_SEGMENTER = Path(__file__).resolve().parent / "segmenter"
