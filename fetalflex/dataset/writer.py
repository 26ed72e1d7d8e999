"""An item's files, each written atomically (``fetalflex.io.atomic``: a temporary file
beside it, then renamed), its record last: a record exists only when every file it names does.

Layout of a data set directory::

    spec.json                 the normalized spec (a rerun with another spec is refused)
    images/<id>.png           the image (a pair's normal image); <id>_twin.png its twin
    labels/<id>.png           label maps (pixel = label id); <id>_twin.png the twin's
    regions/<id>.png          a pair's regenerated region (255 = repainted)
    dicom/<id>.dcm, npy/<id>.npy   optional formats (twins: <id>_twin.*)
    records/<id>.json         per item: seed, full request, model, files with SHA-256, its
                              manifest lines (a sidecar ``fetalflex reproduce`` reads)
    manifest.jsonl, pairs.jsonl, summary.json, contact_sheet.png   (``assemble``)
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Final

import numpy as np

from fetalflex.about import SYNTHETIC_NOTICE, __version__
from fetalflex.anatomy.layout import Layout, extract
from fetalflex.anatomy.templates import sample_template
from fetalflex.data.manifest import Record
from fetalflex.dataset.makers import Made, ModelInfo
from fetalflex.dataset.plan import Item
from fetalflex.dataset.spec import DatasetSpec
from fetalflex.io.atomic import atomic_write_bytes
from fetalflex.io.dicom import SyntheticStudy, dicom_bytes, edit_summary
from fetalflex.io.png import write_image, write_label_map
from fetalflex.request import DEFAULT_PRECISION

ITEM_DIRS: Final = ("images", "labels", "regions", "dicom", "npy", "records")
TMP_SUFFIX: Final = ".tmp"  # fetalflex.io.atomic's (and io.png's) temporaries


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_path(out: Path, item_id: str) -> Path:
    return out / "records" / f"{item_id}.json"


def read_record(out: Path, item: Item) -> dict[str, Any] | None:
    """The item's record when the item is complete (record present and every file it names
    present), else None. A record of another request is an error: the directory belongs to
    another data set or software version."""
    path = record_path(out, item.id)
    try:
        rec: dict[str, Any] = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable record ({exc}); delete it to remake the "
                         f"item") from None
    # The record holds the request as it ran (the weights' sampling defaults filled in);
    # the item's own request must agree on every field it sets.
    want = json.loads(item.request.model_dump_json(exclude_unset=True))
    got = rec.get("request") or {}
    diff = sorted(k for k in want if not _agrees(want[k], got.get(k)))
    if diff:
        raise ValueError(f"{path}: made with another request (fields {', '.join(diff)} "
                         f"differ); write this spec to a new --out")
    if all((out / f["path"]).is_file() for f in rec["files"].values()):
        return rec
    return None


def _agrees(want: Any, got: Any) -> bool:
    """``got`` has every value ``want`` sets (nested settings field by field)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_agrees(v, got.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(got, list) and len(got) == len(want)
                and all(_agrees(w, g) for w, g in zip(want, got, strict=True)))
    return bool(want == got)


def _dicom(out: Path, item: Item, made: Made, spec_sha: str, when: Any) -> dict[str, Path]:
    """DICOM Secondary Capture of the image (and its twin, instance 2 of the same series,
    referencing it); UIDs and the synthetic patient derive from the item, not from chance."""
    from pydicom.uid import generate_uid

    def uid(role: str) -> str:
        return str(generate_uid(entropy_srcs=[spec_sha, item.id, role]))

    patient = "SYN-" + hashlib.sha256(f"{spec_sha}/{item.id}".encode()).hexdigest()[:16].upper()
    study = SyntheticStudy(made.model.id, made.model.sha256[:12], item.plane, item.seed,
                           patient_id=patient, study_uid=uid("study"), series_uid=uid("series"),
                           created=when)
    files = {"dicom": out / "dicom" / f"{item.id}.dcm"}
    atomic_write_bytes(files["dicom"], dicom_bytes(made.image, study, 1, uid("image")))
    if made.twin is not None:
        files["twin_dicom"] = out / "dicom" / f"{item.id}_twin.dcm"
        edit = edit_summary(item.request.preset, item.request.edits)
        atomic_write_bytes(files["twin_dicom"], dicom_bytes(made.twin, study, 2, uid("twin"),
                                                            twin_of=uid("image"), edit=edit))
    return files


def _npy(path: Path, arr: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _manifest_line(item: Item, image: str, label_map: str, label: np.ndarray,
                   preset: str | None) -> dict[str, Any]:
    """The manifest record of one image (``fetalflex.data.manifest.Record``)."""
    sl = sample_template(item.plane, item.seed, item.request.ga_weeks)
    if preset is None:  # the template itself: its own structure list
        structures = [s.model_dump(mode="json") for s in sl.structures]
    else:  # an edited layout: the structures fitted to it
        fitted = extract(Layout(item.plane, label, sl.field_mm, sl.ga_weeks))
        structures = [s.model_dump(mode="json") for s in fitted.structures]
    ga = None if sl.ga_weeks is None else round(float(sl.ga_weeks), 4)
    rec = Record(image=image, label_map=label_map, plane=item.plane, ga_weeks=ga,
                 seed=item.seed, field_mm=round(sl.field_mm, 4), preset=preset,
                 structures=structures)
    return json.loads(rec.model_dump_json(exclude_none=True))


def write_item(out: Path, spec: DatasetSpec, item: Item, made: Made) -> dict[str, Any]:
    """Every file of ``item`` (atomically), then its record; returns the record."""
    req, seed = item.request, str(item.seed)
    # The PNG metadata of ``fetalflex generate``/``reproduce`` (outputs.write_result),
    # so that reproducing an item's record remakes its files byte for byte.
    meta = {"Plane": req.plane, "Model": made.model.id,
            "ModelSHA256": made.model.sha256[:16], "Backend": made.model.backend,
            "Precision": made.model.precision}
    files: dict[str, Path] = {"image": out / "images" / f"{item.id}.png",
                              "label_map": out / "labels" / f"{item.id}.png"}
    write_image(files["image"], made.image, {**meta, "Seed": seed})
    write_label_map(files["label_map"], made.label_map)
    tag = req.preset or (item.group if item.abnormal else None)
    lines = [_manifest_line(item, f"images/{item.id}.png", f"labels/{item.id}.png",
                            made.label_map, None if item.pair else tag)]
    pair: dict[str, Any] | None = None
    if item.pair:
        if made.twin is None or made.twin_label_map is None or made.region is None:
            raise RuntimeError(f"{item.id}: a pair came back without its twin")
        files["twin"] = out / "images" / f"{item.id}_twin.png"
        files["twin_label_map"] = out / "labels" / f"{item.id}_twin.png"
        files["region"] = out / "regions" / f"{item.id}.png"
        write_image(files["twin"], made.twin, {**meta, "Seed": seed,
                                                "Preset": req.preset or "edits"})
        write_label_map(files["twin_label_map"], made.twin_label_map)
        write_image(files["region"], (made.region * 255).astype(np.uint8), meta)
        lines.append(_manifest_line(item, f"images/{item.id}_twin.png",
                                    f"labels/{item.id}_twin.png", made.twin_label_map, tag))
        pair = {"id": item.id, "plane": item.plane, "seed": item.seed, "group": item.group,
                "image": f"images/{item.id}.png", "label_map": f"labels/{item.id}.png",
                "twin": f"images/{item.id}_twin.png",
                "twin_label_map": f"labels/{item.id}_twin.png",
                "region": f"regions/{item.id}.png", "region_pixels": int(made.region.sum())}
    if "dicom" in spec.formats:
        files.update(_dicom(out, item, made, spec.sha256(), spec.dicom_datetime))
    if "npy" in spec.formats:
        files["npy"] = _npy(out / "npy" / f"{item.id}.npy", made.image)
        if made.twin is not None:
            files["twin_npy"] = _npy(out / "npy" / f"{item.id}_twin.npy", made.twin)
    record = {
        "id": item.id, "synthetic": True, "notice": SYNTHETIC_NOTICE,
        "software": f"fetalflex {__version__}",
        "model": {"id": made.model.id, "sha256": made.model.sha256,
                  "backend": made.model.backend, "precision": made.model.precision},
        "item": {"plane": item.plane, "group": item.group, "number": item.number,
                 "seed": item.seed},
        "request": json.loads((made.request or req).model_dump_json()),
        "inputs": {},  # the template comes from the request's seed and ga_weeks
        "files": {k: {"path": p.relative_to(out).as_posix(), "sha256": sha256(p)}
                  for k, p in files.items()},
        "manifest": lines,
        "pair": pair,
    }
    atomic_write_bytes(record_path(out, item.id), json_bytes(record))
    return record


def model_of(record: dict[str, Any]) -> ModelInfo:
    m = record["model"]
    # records written before precision was recorded were made at the default precision
    return ModelInfo(m["id"], m["sha256"], m["backend"], m.get("precision", DEFAULT_PRECISION))


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Temporary files a killed run left in the item folders (called once every item is
    complete, when no run writes item files any more)."""
    gone = []
    for d in ITEM_DIRS:
        for p in (out / d).glob(f".*{TMP_SUFFIX}") if (out / d).is_dir() else ():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone
