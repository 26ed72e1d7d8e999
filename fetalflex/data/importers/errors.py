"""The importers' one error: which file (and CSV line) is wrong, and what is wrong."""

from __future__ import annotations

from pathlib import Path


class DataImportError(ValueError):
    """Bad input data: ``where`` is the file (with ``:LINE`` for a CSV row)."""

    def __init__(self, where: Path | str, reason: str, line: int | None = None) -> None:
        loc = f"{where}:{line}" if line is not None else str(where)
        super().__init__(f"{loc}: {reason}")
        self.where, self.line, self.reason = str(where), line, reason
