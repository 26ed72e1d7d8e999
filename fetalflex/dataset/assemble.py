"""The data set from its item records: ``manifest.jsonl`` (the format ``fetalflex train`` and
``fetalflex.data`` read), ``pairs.jsonl``, ``summary.json`` and ``contact_sheet.png``.

They are written only once every planned item has its record, in plan order, so they are
the same whatever order, process or shard made the items; ``merge`` brings shard
directories together first.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from fetalflex.about import SYNTHETIC_NOTICE, __version__
from fetalflex.dataset.plan import Item, plan
from fetalflex.dataset.spec import DatasetSpec, parse_spec
from fetalflex.dataset.writer import (
    json_bytes,
    read_record,
    record_path,
    remove_stale_temporaries,
)
from fetalflex.io.atomic import atomic_write_bytes
from fetalflex.io.png import read_gray

SPEC_FILE: Final = "spec.json"
MANIFEST: Final = "manifest.jsonl"
PAIRS: Final = "pairs.jsonl"
SUMMARY: Final = "summary.json"
CONTACT_SHEET: Final = "contact_sheet.png"
SHEET_COLUMNS: Final = 6


@dataclass(frozen=True)
class RunTimes:
    """What the run that completes a data set measured (``summary.json``'s timings)."""

    items_made: int
    seconds: float


def claim(out: Path, spec: DatasetSpec) -> None:
    """Write ``spec.json`` into a new directory, or check that it holds this spec."""
    path = out / SPEC_FILE
    body = json_bytes(json.loads(spec.canonical_json()))
    if path.is_file():
        if path.read_bytes() != body:
            raise ValueError(f"--out: {out} holds a data set of another spec ({path}); "
                             f"write this spec to a new directory")
        return
    out.mkdir(parents=True, exist_ok=True)
    stray = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if stray:
        raise ValueError(f"--out: {out} is not empty and is not a data set directory "
                         f"(no {SPEC_FILE}; holds {', '.join(sorted(stray)[:4])})")
    atomic_write_bytes(path, body)


def read_spec(out: Path) -> DatasetSpec:
    path = out / SPEC_FILE
    if not path.is_file():
        raise ValueError(f"{out}: not a data set directory (no {SPEC_FILE})")
    return parse_spec(json.loads(path.read_text()), str(path))


def missing(out: Path, items: list[Item]) -> list[Item]:
    return [it for it in items if read_record(out, it) is None]


def _records(out: Path, items: list[Item]) -> list[dict[str, Any]]:
    recs = []
    for it in items:
        rec = read_record(out, it)
        if rec is None:
            raise ValueError(f"{it.id}: not made yet")
        recs.append(rec)
    models = sorted({r["model"]["sha256"] for r in recs})
    if len(models) > 1:
        raise ValueError(f"records: items were made by {len(models)} different models "
                         f"({', '.join(m[:12] for m in models)}); a data set holds one "
                         f"model's images")
    return recs


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def contact_sheet(out: Path, spec: DatasetSpec, items: list[Item],
                  records: list[dict[str, Any]]) -> bytes:
    """A random sample (seeded by the spec) of items as one labelled PNG: every tile says
    what it is; the title says the images are generated and synthetic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fetalflex.reports.figures import SYNTHETIC, image_panel

    rng = np.random.default_rng([spec.seed, 0xC0171AC7])
    k = min(spec.contact_sheet, len(items))
    pick = sorted(rng.choice(len(items), size=k, replace=False).tolist())
    cols = min(SHEET_COLUMNS, k)
    rows = math.ceil(k / cols)
    # A constrained layout places every title (tiles are square or, for pairs, wide).
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[k:]:
        ax.axis("off")
    for ax, i in zip(axes.flat, pick, strict=False):
        it, rec = items[i], records[i]
        img = read_gray(out / rec["files"]["image"]["path"])
        what = "normal" if not it.abnormal else it.group
        if it.pair:
            twin = read_gray(out / rec["files"]["twin"]["path"])
            gap = np.full((img.shape[0], max(2, img.shape[1] // 32)), 255, np.uint8)
            img = np.concatenate([img, gap, twin], axis=1)
            what += " pair\n(normal | twin)"
        image_panel(ax, img, f"{it.plane} {what}, seed {it.seed}")
    model = records[0]["model"]
    fig.suptitle(f"GENERATED, SYNTHETIC images: {k} random items of {len(items)} in data set "
                 f"'{spec.name}' (model {model['sha256'][:12]}, {model['backend']})\n"
                 f"{SYNTHETIC}", fontsize=10, color="darkred", fontweight="bold")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100,
                metadata={"Software": f"fetalflex {__version__}",
                          "Description": f"Contact sheet of generated synthetic images. "
                                         f"{SYNTHETIC_NOTICE}"})
    plt.close(fig)
    return buf.getvalue()


def finalize(out: Path, spec: DatasetSpec, times: RunTimes | None = None) -> dict[str, Any]:
    """Write the manifest, pairs index, summary and contact sheet from the records of every
    planned item (all must be present); returns the summary."""
    items = plan(spec)
    records = _records(out, items)
    remove_stale_temporaries(out)
    manifest = [line for r in records for line in r["manifest"]]
    pairs = [r["pair"] for r in records if r["pair"] is not None]
    atomic_write_bytes(out / MANIFEST, _jsonl(manifest))
    atomic_write_bytes(out / PAIRS, _jsonl(pairs))
    if spec.contact_sheet:
        atomic_write_bytes(out / CONTACT_SHEET, contact_sheet(out, spec, items, records))
    by_plane: dict[str, Counter[str]] = {}
    for it in items:
        by_plane.setdefault(it.plane, Counter())[it.group] += 1
    model = records[0]["model"]
    run = {"items_made": 0, "seconds": 0.0, "items_per_s": None} if times is None else {
        "items_made": times.items_made, "seconds": round(times.seconds, 2),
        "items_per_s": round(times.items_made / times.seconds, 4) if times.seconds > 0
        and times.items_made else None}
    summary = {
        "name": spec.name, "synthetic": True, "notice": SYNTHETIC_NOTICE,
        "software": f"fetalflex {__version__}", "spec_sha256": spec.sha256(),
        "model": model,
        "counts": {"items": len(items), "images": len(manifest), "pairs": len(pairs),
                   "manifest_lines": len(manifest),
                   "by_plane": {p: dict(c) for p, c in by_plane.items()}},
        "formats": list(spec.formats),
        "files": {"manifest": MANIFEST, "pairs": PAIRS, "spec": SPEC_FILE,
                  "contact_sheet": CONTACT_SHEET if spec.contact_sheet else None},
        # The run that completed the data set (a resumed or sharded data set was made by
        # several runs; each prints its own figures).
        "timings": {"completing_run": run},
    }
    atomic_write_bytes(out / SUMMARY, json_bytes(summary))
    return summary


def merge(out: Path, sources: list[Path]) -> tuple[int, list[Item]]:
    """Copy the complete items of ``sources`` (shard directories of the same spec) into
    ``out``, files first and verified by SHA-256, each record last; returns (items copied,
    items still missing)."""
    specs = [read_spec(s) for s in sources]
    spec = read_spec(out) if (out / SPEC_FILE).is_file() else (specs[0] if specs else None)
    if spec is None:
        raise ValueError(f"{out}: not a data set directory, and no source to merge from")
    for s, sp in zip(sources, specs, strict=True):
        if sp.sha256() != spec.sha256():
            raise ValueError(f"{s}: a shard of another spec than {out} holds")
    claim(out, spec)
    items = plan(spec)
    copied = 0
    todo = missing(out, items)
    for src in sources:
        still = []
        for it in todo:
            rec = read_record(src, it)
            if rec is None:
                still.append(it)
                continue
            for f in rec["files"].values():
                data = (src / f["path"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != f["sha256"]:
                    raise ValueError(f"{src / f['path']}: content differs from its record's "
                                     f"SHA-256; remake that item in {src}")
                atomic_write_bytes(out / f["path"], data)
            atomic_write_bytes(record_path(out, it.id), record_path(src, it.id).read_bytes())
            copied += 1
        todo = still
    return copied, todo

