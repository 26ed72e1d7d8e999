"""``fetalflex generate`` and ``fetalflex gallery``: the main job, files on disk."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from tqdm import tqdm

from fetalflex.anatomy.compose import edits_from_json, label_map_layout, structures_layout
from fetalflex.anatomy.edits import Edit
from fetalflex.anatomy.layout import DEFAULT_FIELD_MM, Layout, StructureList
from fetalflex.appearance import appearance_index
from fetalflex.backends.backends import Backend, load_backend, weights_dir
from fetalflex.generation import Done, Engine, GenerationRequest, GenerationResult
from fetalflex.io.output_dir import prepare_output_dir
from fetalflex.io.png import (
    read_gray,
    read_label_map,
    read_layout_facts,
)
from fetalflex.model.config import DenoiserConfig
from fetalflex.outputs import write_result
from fetalflex.request import IN_PROCESS_BACKENDS
from fetalflex.request_flags import sampling_given

# How an input of another size reaches the model's: label ids must stay ids (nearest); an
# image is averaged over the input pixels each output pixel covers (area).
RESAMPLING = {"label_map": ("nearest", Image.Resampling.NEAREST),
              "image": ("area", Image.Resampling.BOX)}


def resample(field: str, path: Path, arr: NDArray[np.uint8], size: int, kind: str,
             notes: dict[str, Any]) -> NDArray[np.uint8]:
    """``arr`` at ``size`` x ``size``. A resampling is said on stderr and recorded in
    ``notes[field]`` (the sidecar keeps it)."""
    h, w = arr.shape
    if h != w:
        raise ValueError(f"{field}: {path} is {w}x{h}; it must be square")
    if h == size:
        return arr
    method, mode = RESAMPLING[kind]
    out = np.asarray(Image.fromarray(arr, mode="L").resize((size, size), mode), np.uint8)
    notes[field] = {"from": [h, w], "to": [size, size], "method": method}
    print(f"fetalflex generate: {field}: {path} is {w}x{h}; resampled to the model's "
          f"{size}x{size} ({method})", file=sys.stderr)
    return out


def read_layout(path: Path, plane: str, size: int, field_mm: float | None, ga: float | None,
                notes: dict[str, Any] | None = None, field: str = "layout") -> Layout:
    """A label-map PNG or a structure-list JSON, as a layout at the model's size; a label
    map of another size is resampled (nearest) and ``notes`` records it. A label map's field
    of view and GA: the ones given, else the ones its PNG says (``fetalflex layout`` and
    ``generate`` write them), else the default field and no GA."""
    if path.suffix.lower() == ".json":
        sl = StructureList.model_validate_json(path.read_text())
        return structures_layout(field, sl, plane, size)
    own_field, own_ga = read_layout_facts(path)
    lab = resample(field, path, read_label_map(path), size, "label_map",
                   {} if notes is None else notes)
    return label_map_layout(field, lab, plane, size,
                            field_mm if field_mm is not None else own_field or DEFAULT_FIELD_MM,
                            ga if ga is not None else own_ga)


def _edits_arg(values: list[str] | None) -> list[Edit]:
    """``--edit`` values (JSON, or @file.json) -> edits, as the API parses them."""
    texts = [Path(v[1:]).read_text() if v.startswith("@") else v for v in values or []]
    return edits_from_json("edit", texts)


def backend_from_args(args: Any) -> Backend:
    """The backend named by the shared CLI options (``--backend``, ``--weights``, ...)."""
    return load_backend(args.backend, Path(args.weights) if args.weights else None,
                        threads=args.threads, triton_url=args.triton_url,
                        triton_model=args.triton_model, triton_shared_memory=args.triton_shm,
                        precision=args.precision)


def _check_inputs(args: Any, req: GenerationRequest) -> None:
    """Flags that only make sense together, checked before the model loads."""
    if args.reference and not args.reference_layout:
        raise ValueError("reference_layout: --reference needs --reference-layout")
    if args.reference_layout and not args.reference:
        raise ValueError("reference_layout: only with --reference")
    if args.reference:
        req.check_reference("--reference", "; give --preset or --edit")
    if args.reference and args.layout:
        raise ValueError("layout: with --reference the anatomy is --reference-layout's; "
                         "give --layout or --reference, not both")
    for flag in ("layout", "reference", "reference_layout"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            raise ValueError(f"--{flag.replace('_', '-')}: file not found: {value}")


def _read_reference(args: Any, plane: str, size: int, resampled: dict[str, Any]
                    ) -> tuple[np.ndarray, Layout]:
    """The reference image (area-resampled to ``size`` when it differs) and its layout."""
    path = Path(args.reference)
    image = read_gray(path)
    layout = read_layout(Path(args.reference_layout), plane, size, args.field_mm, args.ga,
                         resampled, "reference_layout")
    given = resampled.get("reference_layout", {}).get("from", [size, size])
    if not args.reference_layout.lower().endswith(".json") and given != list(image.shape):
        raise ValueError(f"reference_layout: {args.reference_layout} is {given[1]}x{given[0]}"
                         f" but the reference {image.shape[1]}x{image.shape[0]}: a reference "
                         "and its layout must be the same size")
    return resample("reference", path, image, size, "image", resampled), layout


def _local_config(args: Any) -> DenoiserConfig | None:
    """The in-process backends' weights config (read without loading the model), or None."""
    if args.backend not in IN_PROCESS_BACKENDS:
        return None
    config = DenoiserConfig.load(weights_dir(Path(args.weights) if args.weights else None)
                                 / "config.json")
    appearance = args.appearance
    if appearance is not None:
        appearance_index(appearance, config.appearances)  # refused before the model loads
    return config


def _read_inputs(args: Any, req: GenerationRequest, config: DenoiserConfig,
                 resampled: dict[str, Any]
                 ) -> tuple[Layout | None, np.ndarray | None, Layout | None]:
    size = config.image_size
    layout = (read_layout(Path(args.layout), req.plane, size, args.field_mm, args.ga,
                          resampled) if args.layout else None)
    reference = ref_layout = None
    if args.reference:
        reference, ref_layout = _read_reference(args, req.plane, size, resampled)
    return layout, reference, ref_layout


def run_generate(args: Any) -> int:
    # The request, the flags and the output directory are checked before the model loads:
    # a bad flag fails in milliseconds.
    req = GenerationRequest(
        plane=args.plane, n=args.n, seed=args.seed, control_scale=args.control_scale,
        ga_weeks=args.ga, preset=args.preset, edits=tuple(_edits_arg(args.edit)),
        pair=args.pair, appearance=args.appearance, **sampling_given(args),
    )
    _check_inputs(args, req)
    out, prefix = Path(args.out), args.prefix or req.plane.lower()
    prepare_output_dir(out, prefix, args.overwrite)
    # The inputs are read and checked against the weights' config before the model loads
    # (Triton's model is known only once connected: its inputs are read after).
    config = _local_config(args)
    resampled: dict[str, Any] = {}
    layout = reference = ref_layout = None
    if config is not None:
        layout, reference, ref_layout = _read_inputs(args, req, config, resampled)
    backend = backend_from_args(args)
    engine = Engine(backend)
    # The sidecar records the request as it runs (the appearance and the sampling the
    # weights gave where the flags left them unset), so `reproduce` remakes it.
    req = engine.resolve(req)
    if config is None:
        layout, reference, ref_layout = _read_inputs(args, req, backend.config, resampled)
    t0 = time.perf_counter()
    res: GenerationResult | None = None
    with tqdm(desc=f"generate {args.plane}", unit="call", disable=args.quiet) as bar:
        for ev in engine.run_progressive(req, layout=layout, reference=reference,
                                         reference_layout=ref_layout):
            if isinstance(ev, Done):
                res = ev.result
            else:
                bar.update(1)
                bar.set_postfix(phase=ev.phase, t=ev.step.t)
    if res is None:
        raise RuntimeError("generate: the engine returned no result")
    path = write_result(out, prefix, req, res, backend, layout=layout, reference=reference,
                        reference_layout=ref_layout, image_format=args.format,
                        resampled=resampled)
    print(f"wrote {len(res.samples)} sample(s) to {args.out} ({res.denoiser_calls} denoiser "
          f"calls, {time.perf_counter() - t0:.1f} s); sidecar {path}")
    return 0


# The pairs whose edits the v2 weights render closest to the simulator's (docs/EVALUATION.md,
# anomaly twins): a large fluid change, a skull change, a new bubble, a ventricle change.
GALLERY_PAIRS = (("TV", "hydrocephalus"), ("TT", "microcephaly"), ("AC", "double_bubble"),
                 ("4CH", "hypoplastic_left_heart"))


def _normal_prefix(code: str) -> str:
    return f"normal_{code.lower()}"


def _pair_prefix(code: str, preset: str) -> str:
    return f"pair_{code.lower()}_{preset}"


def gallery_prefixes() -> list[str]:
    """The file prefix of each request of the gallery: normal planes, then pairs."""
    from fetalflex.anatomy.planes import PLANE_CODES

    return ([_normal_prefix(code) for code in PLANE_CODES]
            + [_pair_prefix(code, preset) for code, preset in GALLERY_PAIRS])


def run_gallery(args: Any) -> int:
    from fetalflex.anatomy.planes import PLANE_CODES

    # Like generate: a non-empty --out is refused before the model loads, unless overwrite
    # (then each gallery request's earlier files go first; gallery.png is replaced).
    out = Path(args.out)
    prepare_output_dir(out, gallery_prefixes(), args.overwrite)
    backend = backend_from_args(args)
    engine = Engine(backend)
    tiles: list[dict[str, Any]] = []
    calls = 0
    t0 = time.perf_counter()
    for code in tqdm(PLANE_CODES, desc="gallery: planes", disable=args.quiet):
        req = GenerationRequest(plane=code, seed=args.seed, **sampling_given(args))
        res = engine.run(req)
        calls += res.denoiser_calls
        write_result(out, _normal_prefix(code), req, res, backend)
        s = res.samples[0]
        tiles.append({"plane": code, "layout": s.layout.label_map, "image": s.image})
    pairs: list[dict[str, Any]] = []
    for code, preset in tqdm(GALLERY_PAIRS, desc="gallery: pairs", disable=args.quiet):
        req = GenerationRequest(plane=code, seed=args.seed, preset=preset, pair=True,
                                **sampling_given(args))
        res = engine.run(req)
        calls += res.denoiser_calls
        write_result(out, _pair_prefix(code, preset), req, res, backend)
        s = res.samples[0]
        if s.abnormal_image is None or s.abnormal_layout is None or s.region is None:
            raise RuntimeError(f"gallery: the {preset} pair came back without its twin")
        pairs.append({"plane": code, "preset": preset, "layout": s.layout.label_map,
                      "image": s.image, "twin": s.abnormal_image,
                      "twin_layout": s.abnormal_layout.label_map, "region": s.region})
    from fetalflex.reports.gallery_figure import gallery_figure

    gallery_figure(tiles, pairs, out / "gallery.png",
                   f"{backend.model_id} ({backend.model_hash[:12]}), {req.sampler} "
                   f"{req.steps} steps, guidance {req.guidance}, seed {args.seed}")
    print(f"wrote {out / 'gallery.png'} ({calls} denoiser calls, "
          f"{time.perf_counter() - t0:.1f} s, backend {backend.name})")
    return 0
