"""The anatomy vocabulary as plain data (planes, label ids, presets) for other languages.

``fetalflex planes --json`` prints it, ``vocabulary.json`` beside this module is the
committed copy (a test regenerates it and fails on any difference), and the gRPC API
serves it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fetalflex.anatomy.planes import PLANES
from fetalflex.anatomy.presets import PRESETS, presets_for
from fetalflex.anatomy.structures import STRUCTURES

VOCABULARY_PATH = Path(__file__).with_name("vocabulary.json")


def vocabulary() -> dict[str, Any]:
    return {
        "version": 1,
        "structures": [{"id": s.id, "name": s.name, "display": s.display,
                        "colour": list(s.colour)} for s in STRUCTURES],
        "planes": [{"code": p.code, "name": p.name, "description": p.description,
                    "structures": list(p.structures),
                    "presets": [pr.name for pr in presets_for(p.code)]} for p in PLANES],
        "presets": [{"name": pr.name, "meaning": pr.meaning, "planes": list(pr.planes),
                     "changes": list(pr.changes)} for pr in PRESETS],
    }


def vocabulary_json() -> str:
    return json.dumps(vocabulary(), indent=2) + "\n"


if __name__ == "__main__":
    VOCABULARY_PATH.write_text(vocabulary_json())
    print(f"wrote {VOCABULARY_PATH}")
