"""Where an item is generated: the ``Maker`` protocol and its in-process maker
(``LocalMaker``). A running service makes items with ``service.dataset_remote.ServiceMaker``
(gRPC, above the library; the ``fetalflex`` entry point hands it to ``dataset run
--target``). Both return the same pixels for the same request and weights; the files are
written by ``writer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from fetalflex.dataset.plan import Item
from fetalflex.request import DEFAULT_PRECISION, GenerationRequest, Precision


@dataclass(frozen=True)
class ModelInfo:
    id: str
    sha256: str
    backend: str
    precision: str  # fetalflex.request.PRECISIONS


@dataclass(frozen=True)
class Made:
    """One item's pixels: the image and its label map; for pairs the twin, its label map
    and the regenerated region."""

    image: NDArray[np.uint8]
    label_map: NDArray[np.uint8]
    model: ModelInfo
    twin: NDArray[np.uint8] | None = None
    twin_label_map: NDArray[np.uint8] | None = None
    region: NDArray[np.bool_] | None = None
    request: GenerationRequest | None = None  # as it ran (the weights' defaults filled in)


class Maker(Protocol):
    concurrency: int

    def make(self, item: Item) -> Made: ...

    def close(self) -> None: ...


class LocalMaker:
    """The generation engine in this process (``embedded`` ONNX Runtime or ``torch``)."""

    concurrency = 1

    def __init__(self, backend: str, weights: Path | None, threads: int | None,
                 precision: Precision = DEFAULT_PRECISION) -> None:
        from fetalflex.backends.backends import load_backend
        from fetalflex.generation import Engine

        self.backend = load_backend(backend, weights, threads=threads, precision=precision)
        self.engine = Engine(self.backend)
        self.model = ModelInfo(self.backend.model_id, self.backend.model_hash,
                               self.backend.name, self.backend.precision)

    def make(self, item: Item) -> Made:
        res = self.engine.run(item.request)
        (s,) = res.samples
        if s.abnormal_image is None:
            return Made(s.image, s.layout.label_map, self.model, request=res.request)
        assert s.abnormal_layout is not None and s.region is not None
        return Made(s.image, s.layout.label_map, self.model, s.abnormal_image,
                    s.abnormal_layout.label_map, s.region, request=res.request)

    def close(self) -> None:
        pass
