"""The files of a result: images (PNG or DICOM), label maps, layout pictures, edit regions,
the inputs that are not in the request, and the output record (``record.OutputRecord``)
that lists them. The one writer for ``fetalflex generate``, the Python API and
``fetalflex reproduce``; the gRPC client writes the same record for served results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fetalflex.anatomy.layout import Layout
from fetalflex.anatomy.render import colourize
from fetalflex.backends.backends import Backend
from fetalflex.generation import GenerationRequest, GenerationResult
from fetalflex.io.atomic import atomic_write_bytes
from fetalflex.io.dicom import SyntheticStudy, dicom_pair, edit_summary
from fetalflex.io.naming import sample_file
from fetalflex.io.png import (
    SYNTHETIC,
    Provenance,
    read_gray,
    read_label_map,
    write_image,
    write_label_map,
)
from fetalflex.record import (
    OUTPUT_FORMATS,
    ModelFacts,
    OutputRecord,
    Recipe,
    SampleFiles,
    write_record,
)
from fetalflex.request import require_one_of


def _layout_record(out: Path, name: str, layout: Layout) -> dict[str, Any]:
    write_label_map(out / name, layout.label_map, layout.plane, layout.field_mm,
                    layout.ga_weeks)
    return {"plane": layout.plane, "label_map": name, "field_mm": layout.field_mm,
            "ga_weeks": layout.ga_weeks}


def _dicom_images(req: GenerationRequest, backend: Backend, seed: int, image: np.ndarray,
                  twin: np.ndarray | None) -> tuple[bytes, bytes | None]:
    """DICOM Secondary Capture (the service's writer too): one synthetic patient, study and
    series per sample; the twin is instance 2 and references its source."""
    study = SyntheticStudy(backend.model_id, backend.model_hash[:12], req.plane, seed)
    return dicom_pair(image, twin, study, edit_summary(req.preset, req.edits))


def write_result(out: Path, prefix: str, req: GenerationRequest, res: GenerationResult,
                 backend: Backend, layout: Layout | None = None,
                 reference: np.ndarray | None = None,
                 reference_layout: Layout | None = None, image_format: str = "png",
                 resampled: dict[str, Any] | None = None) -> Path:
    """Images (PNG or DICOM), label maps and a JSON sidecar. The sidecar carries the full
    request and the inputs that are not in it (a given layout, a reference and its layout,
    saved beside it at the model's size; ``resampled`` says which were resampled from
    what), so ``fetalflex reproduce`` can remake every output byte for byte."""
    require_one_of("format", image_format, OUTPUT_FORMATS)
    if reference is not None and image_format == "dicom":
        raise ValueError("format: a repaint of --reference holds your image's pixels; DICOM "
                         "output marks images wholly synthetic, so it is refused here: use "
                         "--format png (its text says which pixels were generated)")
    out.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    inputs: dict[str, Any] = {}
    resampled = resampled or {}
    if layout is not None:
        inputs["layout"] = _layout_record(out, f"{prefix}_input_layout.png", layout)
        if "layout" in resampled:
            inputs["layout"]["resampled"] = resampled["layout"]
    if reference is not None and reference_layout is not None:
        write_image(out / f"{prefix}_input_reference.png", reference,
                    {"Content": "the reference image this request repainted"},
                    Provenance("user"))
        inputs["reference"] = {"image": f"{prefix}_input_reference.png",
                               "layout": _layout_record(out, f"{prefix}_input_reference_"
                                                        "labels.png", reference_layout)}
        if "reference" in resampled:
            inputs["reference"]["resampled"] = resampled["reference"]
        if "reference_layout" in resampled:
            inputs["reference"]["layout"]["resampled"] = resampled["reference_layout"]
    meta = {"Plane": req.plane, "Model": backend.model_id,
            "ModelSHA256": backend.model_hash[:16], "Backend": backend.name,
            "Precision": backend.precision}
    ext = "dcm" if image_format == "dicom" else "png"
    for i, s in enumerate(res.samples):
        def name(kind: str, i: int = i) -> str:
            return sample_file(prefix, i, kind, ext)

        rec: dict[str, Any] = {"seed": s.seed, "image": name("image"),
                               "label_map": name("label_map"),
                               "layout_picture": name("layout_picture"), "report": s.report}
        dicom: tuple[bytes | None, bytes | None] = (None, None)
        if image_format == "dicom":
            dicom = _dicom_images(req, backend, s.seed, s.image, s.abnormal_image)
        if dicom[0] is not None:
            atomic_write_bytes(out / rec["image"], dicom[0])
        else:
            write_image(out / rec["image"], s.image, {**meta, "Seed": str(s.seed)},
                        Provenance("user") if reference is not None else SYNTHETIC)
        # Sample label maps stay plain: a data set's item (dataset/writer.py) and a served
        # one must reproduce to the same bytes; the facts are in the sidecar.
        write_label_map(out / rec["label_map"], s.layout.label_map)
        write_image(out / rec["layout_picture"], colourize(s.layout.label_map), meta)
        if s.abnormal_image is not None and s.abnormal_layout is not None:
            rec.update(abnormal_image=name("abnormal_image"),
                       abnormal_label_map=name("abnormal_label_map"),
                       abnormal_layout_picture=name("abnormal_layout_picture"),
                       region=name("region"),
                       region_pixels=int(s.region.sum()) if s.region is not None else 0)
            if dicom[1] is not None:
                atomic_write_bytes(out / rec["abnormal_image"], dicom[1])
            else:
                twin = (Provenance("partial", rec["region_pixels"], rec["region"])
                        if reference is not None else SYNTHETIC)
                write_image(out / rec["abnormal_image"], s.abnormal_image,
                            {**meta, "Seed": str(s.seed), "Preset": req.preset or "edits"},
                            twin)
            write_label_map(out / rec["abnormal_label_map"], s.abnormal_layout.label_map)
            write_image(out / rec["abnormal_layout_picture"],
                        colourize(s.abnormal_layout.label_map), meta)
            assert s.region is not None
            write_image(out / rec["region"], (s.region * 255).astype(np.uint8), meta)
        files.append(rec)
    record = OutputRecord(
        **OutputRecord.provenance(reference is not None),
        model=ModelFacts(id=backend.model_id, sha256=backend.model_hash, backend=backend.name,
                         precision=backend.precision, config=backend.config.model_dump()),
        request=res.request or req, inputs=inputs, denoiser_calls=res.denoiser_calls,
        denoiser_calls_per_sample=res.denoiser_calls / max(len(res.samples), 1),
        seconds=round(res.seconds, 3),
        timings={k: round(v, 3) for k, v in res.timings.items()},
        samples=[SampleFiles.model_validate(f) for f in files],
        image_format="dicom" if image_format == "dicom" else "png")
    return write_record(out, prefix, record)


def read_inputs(record: Recipe, root: Path
                ) -> tuple[Layout | None, np.ndarray | None, Layout | None]:
    """The given layout, reference image and reference layout a record saved beside it."""
    inputs = record.inputs
    layout = _read_layout_record(root, inputs["layout"]) if "layout" in inputs else None
    reference = ref_layout = None
    if "reference" in inputs:
        reference = read_gray(root / inputs["reference"]["image"])
        ref_layout = _read_layout_record(root, inputs["reference"]["layout"])
    return layout, reference, ref_layout


def _read_layout_record(root: Path, rec: dict[str, Any]) -> Layout:
    return Layout(rec["plane"], read_label_map(root / rec["label_map"]),
                  float(rec["field_mm"]), rec.get("ga_weeks"))
