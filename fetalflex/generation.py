"""The generation core: request -> anatomy -> sampler loop -> images (no gRPC here).

One request makes ``n`` samples. Each sample's anatomy is the given layout, or a plane
template drawn from the sample's seed, then the preset / edits. Samplers: ``ddim``,
``dpmsolver++`` (both with classifier-free guidance in one batched call per step) and
``two-stage`` (adaptive coarse-to-fine). With a reference image the request repaints it
(only the edit region is regenerated); with ``pair`` each sample is a counterfactual
pair: the normal image and its abnormal twin, the repaint of the normal image in the
region where the edited anatomy differs.

Sample i uses seed ``seed + i`` for its template and its own noise stream, so results do
not depend on batching.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fetalflex.anatomy.edits import apply_edits
from fetalflex.anatomy.layout import Layout, one_hot, rasterize
from fetalflex.anatomy.planes import plane_index
from fetalflex.anatomy.templates import sample_template
from fetalflex.backends.backends import Backend
from fetalflex.io import pixels
from fetalflex.model.denoiser import plane_conditions
from fetalflex.model.diffusion import alphas_cumprod_for
from fetalflex.request import (
    DEFAULT_CONTROL_SCALE,
    DEFAULT_GUIDANCE,
    GenerationRequest,
    RepaintSettings,
    SamplerName,
)
from fetalflex.sampling.ddim import (
    ddim_scheduler,
    dpmsolver_scheduler,
    sample_ddim_progressive,
    sample_scheduler_progressive,
)
from fetalflex.sampling.denoisers import CountingCall, Denoiser, guided
from fetalflex.sampling.repaint import (
    RepaintOptions,
    edit_region,
    feathered,
    repaint_progressive,
)
from fetalflex.sampling.steps import SampleNoise, split_output
from fetalflex.sampling.two_stage import TwoStageOptions, two_stage_progressive


@dataclass
class Sample:
    seed: int
    layout: Layout
    image: np.ndarray                      # uint8 (H, W)
    abnormal_layout: Layout | None = None
    abnormal_image: np.ndarray | None = None
    region: np.ndarray | None = None       # bool (H, W): regenerated pixels
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationResult:
    samples: list[Sample]
    denoiser_calls: int
    seconds: float
    timings: dict[str, float]


def to_uint8(x: Tensor) -> np.ndarray:
    """(N, 1, H, W) model-range images -> (N, H, W) uint8 (``fetalflex.io.pixels``)."""
    return pixels.to_uint8(x.detach().squeeze(1).numpy())


def to_float(img: np.ndarray) -> Tensor:
    """(N, H, W) uint8 images -> (N, 1, H, W) model-range tensors."""
    return torch.from_numpy(pixels.to_unit(img))[:, None]


class Engine:
    """Runs requests against one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cfg = backend.config
        self.ac = alphas_cumprod_for(self.cfg)
        self.pred = self.cfg.prediction_type

    # ------------------------------------------------------------------ anatomy
    def layouts_for(self, req: GenerationRequest, layout: Layout | None) -> list[Layout]:
        size = self.cfg.image_size
        out = []
        for i in range(req.n):
            if layout is not None:
                if layout.size != size:
                    raise ValueError(f"layout: size {layout.size} does not match the model's "
                                     f"image size {size}")
                if layout.plane != req.plane:
                    raise ValueError(f"layout: plane {layout.plane} differs from the "
                                     f"request's plane {req.plane}")
                out.append(layout)
            else:
                out.append(rasterize(sample_template(req.plane, req.seed + i, req.ga_weeks),
                                     size))
        return out

    # ------------------------------------------------------------------ denoisers
    def _conds(self, plane: str, ga: list[float | None]) -> Tensor:
        return plane_conditions(plane_index(plane), ga, self.cfg.num_planes)

    def _guided(self, call: CountingCall, layouts: list[Layout], guidance: float,
                control: float) -> Denoiser:
        lay = torch.from_numpy(np.stack([one_hot(x.label_map) for x in layouts]))
        cond = self._conds(layouts[0].plane, [x.ga_weeks for x in layouts])
        return guided(call, lay, cond, guidance, control)

    # ------------------------------------------------------------------ loops
    def _sample(self, req: GenerationRequest, layouts: list[Layout], noise: SampleNoise,
                call: CountingCall, should_stop: Callable[[], bool] | None,
                ) -> Iterator[dict[str, Any]]:
        n = len(layouts)
        s = self.cfg.image_size
        x = noise((n, 1, s, s))
        if req.sampler == "two-stage":
            lay = torch.from_numpy(np.stack([one_hot(v.label_map) for v in layouts]))
            cond = self._conds(layouts[0].plane, [v.ga_weeks for v in layouts])

            def factory(idx: Tensor, g: float, c: float) -> Denoiser:
                return guided(call, lay[idx], cond[idx], g, c * req.control_scale)

            yield from two_stage_progressive(factory, x, self.ac, self.pred, TwoStageOptions(),
                                             noise, should_stop)
            return
        den = self._guided(call, layouts, req.guidance, req.control_scale)
        if req.sampler == "ddim":
            evs = sample_ddim_progressive(den, x, ddim_scheduler(self.cfg), req.steps,
                                          should_stop=should_stop)
        else:
            def preview(out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
                return split_output(out, x_t, t, self.ac, self.pred)[0]

            evs = sample_scheduler_progressive(den, x, dpmsolver_scheduler(self.cfg),
                                               req.steps, preview=preview,
                                               should_stop=should_stop)
        last = None
        for ev in evs:
            last = ev
            yield ev
        assert last is not None
        yield {**last, "final": True}

    def run_progressive(
        self, req: GenerationRequest, layout: Layout | None = None,
        reference: np.ndarray | None = None, reference_layout: Layout | None = None,
        should_stop: Callable[[], bool] | None = None, region: np.ndarray | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yields step events (``phase``, ``i``, ``t``, ``denoised``) and finally
        ``{"result": GenerationResult}``."""
        t0 = time.perf_counter()
        call = CountingCall(self.backend.call)
        timings: dict[str, float] = {}
        seeds = [req.seed + i for i in range(req.n)]
        edits = req.edit_list()
        if reference is not None:
            if reference_layout is None:
                raise ValueError("reference_layout: a reference image needs its layout")
            if reference.shape != (self.cfg.image_size, self.cfg.image_size):
                raise ValueError(f"reference: size {reference.shape} does not match the "
                                 f"model's image size {self.cfg.image_size}")
            normals = self.layouts_for(req.model_copy(update={"n": 1}), reference_layout)
            normals = normals * req.n
            images = np.stack([reference] * req.n)
        else:
            normals = self.layouts_for(req, layout)
            images = None
        abnormal = [apply_edits(v, edits) for v in normals] if edits else None
        noise = SampleNoise(seeds)
        final: dict[str, Any] = {}
        if images is None:
            # Plain generation of the normal anatomy, or of the edited one when not pairing.
            target = normals if (req.pair or abnormal is None) else abnormal
            t1 = time.perf_counter()
            for ev in self._sample(req, target, noise, call, should_stop):
                if ev.get("final"):
                    final = ev
                else:
                    yield {"phase": "sample", **ev}
            images = to_uint8(final["x"])
            timings["sample_s"] = time.perf_counter() - t1
            if not req.pair:
                samples = [Sample(seeds[i], target[i], images[i],
                                  report=(final.get("report") or [{}] * req.n)[i])
                           for i in range(req.n)]
                yield {"result": GenerationResult(samples, call.calls,
                                                  time.perf_counter() - t0, timings)}
                return
        assert abnormal is not None, "repaint needs a preset or edits"
        if region is not None:
            if region.shape != (self.cfg.image_size, self.cfg.image_size):
                raise ValueError(f"edit_region: size {region.shape} does not match the model's "
                                 f"image size {self.cfg.image_size}")
            regions = [region.astype(bool) & (a.label_map != 0) for a in abnormal]
        else:
            regions = [edit_region(a.label_map, b.label_map, req.repaint.dilate_px)
                       for a, b in zip(normals, abnormal, strict=True)]
        t2 = time.perf_counter()
        twin = None
        for ev in self._repaint(call, images, abnormal, regions, seeds, req.guidance,
                                req.control_scale, req.repaint, should_stop):
            if "twin" in ev:
                twin = ev["twin"]
            else:
                yield {"phase": "repaint", **ev}
        timings["repaint_s"] = time.perf_counter() - t2
        assert twin is not None
        samples = [Sample(seeds[i], normals[i], images[i], abnormal[i], twin[i], regions[i])
                   for i in range(req.n)]
        yield {"result": GenerationResult(samples, call.calls, time.perf_counter() - t0,
                                          timings)}

    def _repaint(self, call: CountingCall, images: np.ndarray, layouts: list[Layout],
                 regions: list[np.ndarray], seeds: list[int], guidance: float, control: float,
                 settings: RepaintSettings, should_stop: Callable[[], bool] | None = None,
                 ) -> Iterator[dict[str, Any]]:
        mask = torch.from_numpy(np.stack([feathered(r, settings.feather_px)
                                          for r in regions]))[:, None]
        den = self._guided(call, layouts, guidance, control)
        rp_noise = SampleNoise([s + 7_919 for s in seeds])
        out = None
        opts = RepaintOptions(**settings.model_dump())
        for ev in repaint_progressive(den, to_float(images), mask, self.ac, self.pred, opts,
                                      rp_noise, should_stop):
            if ev.get("final"):
                out = ev["x"]
            else:
                yield ev
        assert out is not None
        twin = to_uint8(out)  # type: ignore[arg-type]
        # Outside the region the twin IS the reference, byte for byte.
        yield {"twin": np.where(np.stack(regions), twin, images)}

    def repaint(self, images: np.ndarray, layouts: list[Layout], regions: list[np.ndarray],
                seeds: list[int], guidance: float = DEFAULT_GUIDANCE,
                control_scale: float = DEFAULT_CONTROL_SCALE,
                settings: RepaintSettings | None = None) -> tuple[np.ndarray, int]:
        """Repaint a batch of images (uint8, one plane) inside ``regions``, conditioned on
        ``layouts``; returns the images and the denoiser calls made. ``run`` uses the same
        loop for counterfactual twins; this form lets a caller repaint many references of
        one plane in one batch (and with the unedited layout, as a control)."""
        if not layouts or len({x.plane for x in layouts}) != 1:
            raise ValueError("layouts: one batch must hold one plane")
        call = CountingCall(self.backend.call)
        for ev in self._repaint(call, images, layouts, regions, seeds, guidance,
                                control_scale, settings or RepaintSettings()):
            if "twin" in ev:
                return ev["twin"], call.calls
        raise RuntimeError("repaint ended without a result")  # pragma: no cover

    def sample_layouts(self, layouts: list[Layout], seeds: list[int], *,
                       steps: int | None = None, guidance: float | None = None,
                       control_scale: float | None = None, sampler: SamplerName = "ddim",
                       ) -> tuple[np.ndarray, int]:
        """Generate one image per layout (one plane) in one batch, sample i from seed i's
        noise stream (so the images do not depend on the batch); unset options take the
        request schema's defaults. Returns uint8 images and the denoiser calls made."""
        if not layouts or len({x.plane for x in layouts}) != 1:
            raise ValueError("layouts: one batch must hold one plane")
        if len(seeds) != len(layouts):
            raise ValueError(f"seeds: {len(seeds)} given for {len(layouts)} layouts")
        opts = {k: v for k, v in {"steps": steps, "guidance": guidance,
                                  "control_scale": control_scale}.items() if v is not None}
        req = GenerationRequest(plane=layouts[0].plane, sampler=sampler, **opts)
        call = CountingCall(self.backend.call)
        final: dict[str, Any] = {}
        for ev in self._sample(req, layouts, SampleNoise(seeds), call, None):
            if ev.get("final"):
                final = ev
        return to_uint8(final["x"]), call.calls

    def run(self, req: GenerationRequest, **kw: Any) -> GenerationResult:
        for ev in self.run_progressive(req, **kw):
            if "result" in ev:
                return ev["result"]  # type: ignore[no-any-return]
        raise RuntimeError("generation ended without a result")  # pragma: no cover
