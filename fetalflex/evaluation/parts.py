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
    """Finished parts of one run, one JSON line each. Lines of another model or other
    options are not used, and kept as they are: a run with other options (say, another
    ``--reader-steps``) in the same folder never throws away finished parts of the first."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path, self.identity = path, identity
        self.parts: dict[str, Any] = {}
        self.others: list[str] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption
                    continue
                if not isinstance(rec, dict) or "part" not in rec:
                    continue
                if rec.get("identity") == identity:
                    self.parts[rec["part"]] = rec["value"]
                else:
                    self.others.append(line)
        self._rewrite()

    def get(self, part: str) -> Any:
        return self.parts.get(part)

    def put(self, part: str, value: Any) -> None:
        self.parts[part] = value
        self._rewrite()

    def _rewrite(self) -> None:
        lines = self.others + [json.dumps({"identity": self.identity, "part": k, "value": v})
                               for k, v in self.parts.items()]
        atomic_write_text(self.path, "".join(f"{x}\n" for x in lines))
