"""The shipped weights (phantom world only; see MODEL_CARD.md): where they are, one place."""

from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "denoiser"
DEFAULT_SEGMENTER = Path(__file__).resolve().parent / "segmenter"
