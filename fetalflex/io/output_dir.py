"""Output directories of one request: never silently mixed with another request's files.

A directory that already holds files is refused unless the caller says ``overwrite``; then
the earlier request's files under the same prefix (the ones its sidecar ``PREFIX.json``
lists) are removed first, so the sidecar and the files beside it always belong together.
Used by ``generate``, ``reproduce``, ``gallery`` (one prefix per gallery request), the
client and the API's ``Output.save``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def _listed_files(node: Any) -> Iterator[str]:
    """File names a sidecar lists (any string value naming a file beside it)."""
    if isinstance(node, dict):
        for v in node.values():
            yield from _listed_files(v)
    elif isinstance(node, list):
        for v in node:
            yield from _listed_files(v)
    elif isinstance(node, str) and "/" not in node and "\\" not in node and \
            node.rsplit(".", 1)[-1] in ("png", "dcm", "f32"):
        yield node


def prepare_output_dir(out: Path, prefix: str | Sequence[str], overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; with it, remove the files of the
    earlier request of the same ``prefix`` (its sidecar and what the sidecar lists), or of
    each of several prefixes (the requests of one command)."""
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a directory")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        named = ", ".join(f"'{p}'" for p in prefixes[:3]) + (", ..." if len(prefixes) > 3
                                                             else "")
        raise ValueError(f"out: {out} is not empty ({len(entries)} entries: {shown}); the "
                         "files of two requests would mix: choose an empty directory, or "
                         "pass --overwrite (overwrite=True in the Python API) to replace the "
                         f"earlier outputs of prefix{'es' if len(prefixes) > 1 else ''} "
                         f"{named}")
    for p in prefixes:
        _remove_earlier(out, p)


def _remove_earlier(out: Path, prefix: str) -> None:
    """The sidecar ``PREFIX.json`` in ``out`` and the files it lists, when there is one."""
    sidecar = out / f"{prefix}.json"
    if not sidecar.is_file():
        return
    try:
        listed = set(_listed_files(json.loads(sidecar.read_text())))
    except json.JSONDecodeError:
        listed = set()
    for name in listed:
        (out / name).unlink(missing_ok=True)
    sidecar.unlink()
