"""``PartCheckpoint``: finished parts of resumable evaluations."""

from __future__ import annotations

from pathlib import Path

from fetalflex.evaluation.parts import PartCheckpoint


def test_parts_resume_and_other_identities_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "parts.jsonl"
    a = PartCheckpoint(path, "options A")
    a.put("cell 1", {"dice": 0.95})
    a.put("cell 2", [1, 2])
    # a run with other options in the same folder: sees none of A's parts, loses none
    b = PartCheckpoint(path, "options B")
    assert b.get("cell 1") is None
    b.put("cell 1", {"dice": 0.5})
    with path.open("a") as f:
        f.write('{"identity": "options A", "part": "cell 3", "val')  # torn by a kill
    again = PartCheckpoint(path, "options A")
    assert again.get("cell 1") == {"dice": 0.95} and again.get("cell 2") == [1, 2]
    assert again.get("cell 3") is None
    assert PartCheckpoint(path, "options B").get("cell 1") == {"dice": 0.5}
    assert len(path.read_text().splitlines()) == 3  # the torn line is gone, nothing else
