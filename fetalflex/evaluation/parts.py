"""Resumable evaluations: the finished parts of a run, kept as they finish.

``fetalflex evaluate-downstream`` and ``evaluate-downstream-real`` train dozens of small
models; an interrupted run picks up where it stopped. A part is keyed by its name; the
whole file by an identity (the model and every option a part depends on), so parts made
with another model or other options are never reused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fetalflex.io.atomic import atomic_write_text


class PartCheckpoint:
    """Finished parts of one run, one JSON line each; lines of another model or other
    options are ignored (and dropped on the next write)."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path, self.identity = path, identity
        self.parts: dict[str, Any] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption
                    continue
                if isinstance(rec, dict) and rec.get("identity") == identity:
                    self.parts[rec["part"]] = rec["value"]
        self._rewrite()

    def get(self, part: str) -> Any:
        return self.parts.get(part)

    def put(self, part: str, value: Any) -> None:
        self.parts[part] = value
        self._rewrite()

    def _rewrite(self) -> None:
        lines = [json.dumps({"identity": self.identity, "part": k, "value": v})
                 for k, v in self.parts.items()]
        atomic_write_text(self.path, "".join(f"{x}\n" for x in lines))
