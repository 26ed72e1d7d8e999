"""The Dockerfile, read statically (no Docker engine here): the rules we hold it to."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, list[str]]:
    lines, cur = [], ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.strip().startswith("#") or not raw.strip():
            continue
        cur += raw.rstrip("\\").rstrip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(cur.strip())
            cur = ""
    stages: dict[str, list[str]] = {"_global": []}
    name = "_global"
    for ln in lines:
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", ln, re.I)
        if m:
            name = m.group(2) or m.group(1)
            stages[name] = [ln]
        else:
            stages[name].append(ln)
    return stages


def test_bases_are_pinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    for st in _stages().values():
        if st and st[0].upper().startswith("FROM"):
            image = st[0].split()[1]
            image = args.get(image.strip("${}"), image)
            if image in ("builder",):
                continue
            assert ":" in image and not image.endswith(":latest"), image
            assert re.search(r":\d", image), f"{image}: pin a version tag"


def test_runtime_stages_are_not_root_and_healthcheck() -> None:
    st = _stages()
    for name in ("orchestrator", "triton"):
        body = " ".join(st[name])
        users = re.findall(r"USER (\S+)", body)
        assert users and not users[-1].startswith(("0", "root")), name
        assert "HEALTHCHECK" in body, name
    assert "fetalflex health" in " ".join(st["orchestrator"]).replace('", "', " ").replace(
        '["', "").replace('"]', "")


def test_no_secrets_and_dockerignore() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"(?i)(ENV|ARG)\s+\S*(SECRET|PASSWORD|TOKEN|API_KEY)\S*=\S+", text)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignore)
    assert "torch==2.13.0" in text  # pinned, never an unpinned CUDA pull
