"""Writes an imported data set: the scans and label maps at the model's size, the manifest
and a report, into a staging folder that becomes ``--out`` only when everything succeeded
(an error leaves no half-written data set behind).

Imported scans are the user's (or a public data set's) real pixels: they are **not** marked
synthetic; their PNG text says where they came from. Label maps say which pixels are
labelled (255 = not labelled).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import NDArray
from PIL import Image, PngImagePlugin

from fetalflex.about import __version__
from fetalflex.data.importers.sector import SECTOR_NOTE, label_outside_sector
from fetalflex.data.manifest import Record, write_manifest
from fetalflex.io.atomic import atomic_write

LABEL_MAP_NOTE = ("fetalflex label map: pixel value = global label id; 255 = not labelled "
                  "(partial anatomy)")


def _png(path: Path, arr: NDArray[np.uint8], text: dict[str, str]) -> None:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v)
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG", pnginfo=info))


class ImportWriter:
    """Collects records; ``with`` commits the staging folder to ``out`` on success."""

    def __init__(self, out: Path, source: str, credit: str, overwrite: bool = False,
                 sector: bool = True) -> None:
        """``sector``: label the black outside of each scan's imaged sector ``background``
        where its label map leaves it unlabelled (``sector.py``; every importer alike)."""
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise ValueError(f"out: {out} exists and is not empty; choose another folder or "
                             f"pass --overwrite to replace it")
        self.out, self.source, self.credit = out, source, credit
        self.stage = out.parent / f".{out.name}.importing"
        self.records: list[Record] = []
        self.skipped: Counter[str] = Counter()
        self.sector = sector
        self.notes: dict[str, object] = {
            "sector": SECTOR_NOTE if sector else "not labelled (--no-sector)"}

    def __enter__(self) -> ImportWriter:
        if self.stage.exists():
            shutil.rmtree(self.stage)
        (self.stage / "images").mkdir(parents=True)
        (self.stage / "labels").mkdir()
        return self

    def add(self, name: str, image: NDArray[np.uint8], label_map: NDArray[np.uint8],
            **fields: object) -> None:
        """One scan: ``name`` (unique, file-name safe) and the record's other fields."""
        img_rel, lab_rel = f"images/{name}.png", f"labels/{name}.png"
        if self.sector:
            label_map = label_outside_sector(label_map, image)
        _png(self.stage / img_rel, image,
             {"Source": f"{self.source} (real scan, imported by fetalflex {__version__})",
              "Credit": self.credit, "Synthetic": "false"})
        _png(self.stage / lab_rel, label_map,
             {"Content": LABEL_MAP_NOTE, "Source": self.source})
        self.records.append(Record.model_validate(
            {"image": img_rel, "label_map": lab_rel, "source": self.source, **fields}))

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def report(self) -> dict[str, object]:
        by: Counter[str] = Counter(f"{r.split or 'unsplit'}/{r.plane}" for r in self.records)
        subjects = {s: len({r.subject for r in self.records if r.split == s})
                    for s in ("train", "val")}
        return {"source": self.source, "credit": self.credit, "records": len(self.records),
                "by_split_and_plane": dict(sorted(by.items())), "subjects": subjects,
                "skipped": dict(self.skipped), **self.notes}

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return
        if not self.records:
            shutil.rmtree(self.stage, ignore_errors=True)
            raise ValueError(f"{self.source}: nothing to import (skipped: "
                             f"{dict(self.skipped) or 'none'})")
        write_manifest(self.stage / "manifest.jsonl", self.records)
        (self.stage / "import_report.json").write_text(json.dumps(self.report(), indent=2)
                                                       + "\n")
        if self.out.exists():
            shutil.rmtree(self.out)
        self.stage.rename(self.out)
