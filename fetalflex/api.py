"""The Python API for notebooks and scripts, in the style of a diffusers pipeline.

    >>> from fetalflex import FetalFlex
    >>> ff = FetalFlex.load()                       # the shipped weights, ONNX Runtime, CPU
    >>> out = ff.generate(plane="TV", preset="ventriculomegaly", pair=True, seed=3)
    >>> out.images[0].shape == (ff.size, ff.size), out.twins[0] is not None
    (True, True)
    >>> sidecar = out.save("out/api")               # PNGs + a JSON sidecar with provenance
    >>> FetalFlex.load().reproduce(sidecar).images[0].tobytes() == out.images[0].tobytes()
    True

Every image is synthetic (phantom world): the sidecar and PNG metadata say so. Options not
given take the request schema's defaults (:class:`~fetalflex.request.GenerationRequest`);
planes and presets are case-insensitive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from fetalflex.anatomy.layout import Layout
from fetalflex.backends.backends import Backend, load_backend
from fetalflex.generation import Engine, GenerationResult, Sample
from fetalflex.request import DEFAULT_PRECISION, GenerationRequest, Precision, request_error


@dataclass(frozen=True)
class Output:
    """What one call made: per sample the image, its layout, and for pairs the twin."""

    request: GenerationRequest
    result: GenerationResult
    backend: Backend
    layout: Layout | None = None
    reference: np.ndarray | None = None
    reference_layout: Layout | None = None

    @property
    def samples(self) -> list[Sample]:
        return self.result.samples

    @property
    def images(self) -> list[np.ndarray]:
        return [s.image for s in self.samples]

    @property
    def layouts(self) -> list[Layout]:
        return [s.layout for s in self.samples]

    @property
    def twins(self) -> list[np.ndarray | None]:
        return [s.abnormal_image for s in self.samples]

    @property
    def provenance(self) -> dict[str, Any]:
        return {"model_id": self.backend.model_id, "model_sha256": self.backend.model_hash,
                "backend": self.backend.name, "precision": self.backend.precision,
                "request": json.loads(self.request.model_dump_json()),
                "denoiser_calls": self.result.denoiser_calls}

    def save(self, out: str | Path, prefix: str | None = None, overwrite: bool = False
             ) -> Path:
        """Write PNGs (marked synthetic) and the JSON sidecar; returns the sidecar's path.
        The sidecar holds everything :meth:`FetalFlex.reproduce` needs. A non-empty ``out``
        is refused unless ``overwrite`` (then the earlier files of ``prefix`` are removed
        first), as ``fetalflex generate`` does: two requests' files never mix."""
        from fetalflex.io.output_dir import prepare_output_dir
        from fetalflex.outputs import write_result

        prefix = prefix or self.request.plane.lower()
        prepare_output_dir(Path(out), prefix, overwrite)
        return write_result(Path(out), prefix, self.request, self.result, self.backend,
                            layout=self.layout, reference=self.reference,
                            reference_layout=self.reference_layout)


class FetalFlex:
    """A loaded generator: ``FetalFlex.load()`` then ``generate(...)``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.engine = Engine(backend)

    @classmethod
    def load(cls, weights: str | Path | None = None, backend: str = "embedded",
             threads: int | None = None, triton_url: str | None = None,
             precision: Precision = DEFAULT_PRECISION) -> FetalFlex:
        """The shipped weights (or ``weights``) on ``backend`` (embedded ONNX Runtime by
        default; ``torch`` or ``triton`` with ``triton_url``). ``precision="int8"`` runs the
        embedded backend's quantized graph (built on first use, about a minute). Nothing is
        downloaded."""
        return cls(load_backend(backend, Path(weights) if weights else None, threads=threads,
                                triton_url=triton_url, precision=precision))

    @property
    def size(self) -> int:
        return self.backend.config.image_size

    def generate(self, plane: str, *, layout: Layout | None = None,
                 reference: np.ndarray | None = None, reference_layout: Layout | None = None,
                 **options: Any) -> Output:
        """Generate ``n`` samples of ``plane``. ``options`` are the request schema's fields
        (``preset``, ``edits``, ``pair``, ``n``, ``seed``, ``steps``, ``guidance``,
        ``sampler``, ``ga_weeks``, ``appearance``, ...). ``layout`` replaces the template;
        ``reference`` + ``reference_layout`` repaint an existing image in the edited region."""
        try:
            req = GenerationRequest(plane=plane, **options)
        except ValidationError as exc:
            raise request_error(exc) from None
        req = self.engine.resolve(req)
        res = self.engine.run(req, layout=layout, reference=reference,
                              reference_layout=reference_layout)
        return Output(req, res, self.backend, layout, reference, reference_layout)

    def reproduce(self, sidecar: str | Path) -> Output:
        """Regenerate the outputs of a sidecar written by ``Output.save`` / ``fetalflex
        generate``, byte for byte (same weights required: checked by content hash)."""
        from fetalflex.outputs import read_inputs
        from fetalflex.record import read_recipe

        path = Path(sidecar)
        record = read_recipe(path)
        want = record.model.sha256
        if want != self.backend.model_hash:
            hint = f"load the weights it was made with ({record.model.id}): --weights DIR"
            raise ValueError(f"sidecar: made with model {want[:12]}, but the loaded "
                             f"weights are {self.backend.model_hash[:12]}; {hint}")
        made = record.model.precision
        if made != self.backend.precision:
            raise ValueError(f"sidecar: made with precision {made}, but the loaded backend "
                             f"runs {self.backend.precision} (load with precision={made!r})")
        req = record.request
        layout, reference, ref_layout = read_inputs(record, path.parent)
        res = self.engine.run(req, layout=layout, reference=reference,
                              reference_layout=ref_layout)
        return Output(req, res, self.backend, layout, reference, ref_layout)

