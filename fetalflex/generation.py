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
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor

from fetalflex.anatomy.compose import Anatomy, compose
from fetalflex.anatomy.layout import Layout, one_hot
from fetalflex.anatomy.planes import plane_index
from fetalflex.appearance import Appearance, appearance_index, default_appearance
from fetalflex.backends.backends import Backend
from fetalflex.errors import InvalidRequestError
from fetalflex.io import pixels
from fetalflex.io.tone import apply_tone
from fetalflex.model.denoiser import plane_conditions
from fetalflex.model.diffusion import alphas_cumprod_for
from fetalflex.request import (
    DEFAULT_CONTROL_SCALE,
    DEFAULT_GUIDANCE,
    GenerationRequest,
    RepaintSettings,
    SamplerName,
)
from fetalflex.sampling.denoisers import (
    Conditioning,
    CountingCall,
    conditioning,
    contrast_conditions,
    predicting_x0,
)
from fetalflex.sampling.events import Final, SamplerEvent, Step, StopCheck, final
from fetalflex.sampling.registry import SAMPLERS, SamplingJob
from fetalflex.sampling.repaint import edit_region, feathered, repaint_progressive
from fetalflex.sampling.steps import SampleNoise


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
    appearance: str = "phantom"  # the look the weights drew (the request's, or their default)
    # The request as it ran (``Engine.resolve``: appearance and the weights' sampling
    # defaults filled in): what a record of this result must say.
    request: GenerationRequest | None = None


@dataclass(frozen=True)
class Progress:
    """A sampler step of one phase: ``sample`` (the images) or ``repaint`` (the twins)."""

    phase: Literal["sample", "repaint"]
    step: Step


@dataclass(frozen=True)
class Done:
    result: GenerationResult


EngineEvent = Progress | Done
"""What :meth:`Engine.run_progressive` yields: progress, then one ``Done``."""


def _forward(events: Iterable[SamplerEvent], phase: Literal["sample", "repaint"]
             ) -> Generator[Progress, None, Final]:
    """Forward a sampler's steps as progress; the sampler's Final is the return value
    (``final = yield from _forward(...)``)."""
    for ev in events:
        if isinstance(ev, Final):
            return ev
        yield Progress(phase, ev)
    raise RuntimeError(f"{phase}: the sampler ended without a Final event")


def to_uint8(x: Tensor) -> np.ndarray:
    """(N, 1, H, W) model-range images -> (N, H, W) uint8 (``fetalflex.io.pixels``)."""
    return pixels.to_uint8(x.detach().squeeze(1).numpy())


def _twins(repainted: Final, images: np.ndarray, regions: list[np.ndarray],
           curve: tuple[int, ...] | None = None) -> np.ndarray:
    """The repainted images inside their regions (through the weights' tone ``curve``: they
    are generated pixels); outside, the reference, byte for byte."""
    return np.where(np.stack(regions), apply_tone(to_uint8(repainted.x), curve), images)


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
    def anatomy_for(self, req: GenerationRequest, layout: Layout | None) -> list[Anatomy]:
        """Each sample's layouts (``anatomy.compose``): ``layout``, or the template of seed
        ``seed + i``, then the request's preset and edits."""
        return [compose(req.plane, self.cfg.image_size, layout=layout, seed=req.seed + i,
                        ga_weeks=req.ga_weeks, preset=req.preset, edits=req.edits)
                for i in range(req.n)]

    # ------------------------------------------------------------------ denoisers
    def appearance(self, requested: str | None) -> Appearance:
        """The appearance a request gets: the one it names (if these weights serve it, else
        a named error), or the weights' preferred one (real where served)."""
        served = self.cfg.appearances
        if requested is None:
            return default_appearance(served)
        appearance_index(requested, served)
        return cast(Appearance, requested.strip().lower())

    def tone_curve(self, appearance: str | None, plane: str | None = None
                   ) -> tuple[int, ...] | None:
        """The grey-level curve these weights apply to the images they sample in this
        appearance and plane (``fetalflex.io.tone``: the plane's own where they have
        one, else the appearance's), or None."""
        look = self.appearance(appearance)
        rec = self.cfg.sampling
        if plane is not None:
            own = rec.tone_curve_by_plane.get(look, {}).get(plane)
            if own is not None:
                return own
        return rec.tone_curve.get(look)

    def resolve(self, req: GenerationRequest) -> GenerationRequest:
        """The request as these weights run it: the appearance settled (or refused by name)
        and, for ``steps``, ``guidance`` and ``sampler`` the request left unset, the weights'
        recommended sampling (``DenoiserConfig.sampling``; the schema's defaults where the
        weights say nothing). A field the request sets is never changed."""
        look = self.appearance(req.appearance)
        rec = self.cfg.sampling
        update: dict[str, Any] = {"appearance": look}
        given = req.model_fields_set
        if "steps" not in given and rec.steps is not None:
            update["steps"] = rec.steps
        if "sampler" not in given and rec.sampler is not None:
            update["sampler"] = rec.sampler
        if "guidance" not in given:
            g = rec.guidance_by_appearance.get(look, rec.guidance)
            if g is not None:
                update["guidance"] = g
        return req.model_copy(update=update)

    def _conds(self, plane: str, ga: list[float | None], appearance: str | None) -> Tensor:
        served = self.cfg.appearances
        idx = appearance_index(self.appearance(appearance), served)
        return plane_conditions(plane_index(plane), ga, self.cfg.num_planes, idx, len(served))

    def _conditioning(self, call: CountingCall, layouts: list[Layout],
                      appearance: str | None) -> Conditioning:
        lay = torch.from_numpy(np.stack([one_hot(x.label_map) for x in layouts]))
        ga = [x.ga_weeks for x in layouts]
        plane, look = layouts[0].plane, self.appearance(appearance)
        cond = self._conds(plane, ga, look)
        # plane contrast, where these weights name this plane and look (None: none)
        contrast = contrast_conditions(self.cfg, cond, [plane] * len(ga), [look] * len(ga))
        return conditioning(call, lay, cond,
                            guidance_below_t=self.cfg.sampling.guidance_below_t,
                            contrast=contrast)

    # ------------------------------------------------------------------ loops
    def _sample(self, req: GenerationRequest, layouts: list[Layout], noise: SampleNoise,
                call: CountingCall, should_stop: StopCheck | None,
                ) -> Iterator[SamplerEvent]:
        """The request's sampler (by name, from the registry) over one batch."""
        s = self.cfg.image_size
        x = noise((len(layouts), 1, s, s))
        job = SamplingJob(self._conditioning(call, layouts, req.appearance), x, noise,
                          self.cfg, self.ac, req.steps, req.guidance, req.control_scale,
                          should_stop)
        return SAMPLERS[req.sampler](job)

    def run_progressive(
        self, req: GenerationRequest, layout: Layout | None = None,
        reference: np.ndarray | None = None, reference_layout: Layout | None = None,
        should_stop: StopCheck | None = None, region: np.ndarray | None = None,
    ) -> Iterator[EngineEvent]:
        """Yields a :class:`Progress` per denoiser call (its phase and the sampler's step),
        then :class:`Done` with the result. ``should_stop`` is asked before every call
        (:class:`~fetalflex.errors.SamplingCancelledError` when it says stop)."""
        t0 = time.perf_counter()
        # The appearance is settled (or refused by name) and the weights' sampling defaults
        # filled in before any work.
        req = self.resolve(req)
        call = CountingCall(self.backend.call)
        timings: dict[str, float] = {}
        seeds = [req.seed + i for i in range(req.n)]
        if reference is not None:
            if reference_layout is None:
                raise InvalidRequestError("reference_layout",
                                          "a reference image needs its layout")
            if reference.shape != (self.cfg.image_size, self.cfg.image_size):
                raise InvalidRequestError("reference", f"size {reference.shape} does not match "
                                          f"the model's image size {self.cfg.image_size}")
            req.check_reference("the reference")
            anatomy = self.anatomy_for(req, reference_layout)
            images = np.stack([reference] * req.n)
        else:
            anatomy = self.anatomy_for(req, layout)
            images = None
        normals = [a.normal for a in anatomy]
        # every sample has the same edits: all abnormal layouts, or none
        abnormal = [a.abnormal for a in anatomy if a.abnormal is not None] or None
        noise = SampleNoise(seeds)
        if images is None:
            # Plain generation of the normal anatomy, or of the edited one when not pairing.
            target = normals if (req.pair or abnormal is None) else abnormal
            t1 = time.perf_counter()
            sampled = yield from _forward(self._sample(req, target, noise, call, should_stop),
                                          "sample")
            images = apply_tone(to_uint8(sampled.x), self.tone_curve(req.appearance, req.plane))
            timings["sample_s"] = time.perf_counter() - t1
            if not req.pair:
                samples = [Sample(seeds[i], target[i], images[i],
                                  report=dict(sampled.reports[i]) if sampled.reports else {})
                           for i in range(req.n)]
                yield Done(GenerationResult(samples, call.calls, time.perf_counter() - t0,
                                            timings, str(req.appearance), req))
                return
        assert abnormal is not None, "repaint needs a preset or edits"
        if region is not None:
            if region.shape != (self.cfg.image_size, self.cfg.image_size):
                raise InvalidRequestError("edit_region", f"size {region.shape} does not match "
                                          f"the model's image size {self.cfg.image_size}")
            regions = [region.astype(bool) & (a.label_map != 0) for a in abnormal]
        else:
            regions = [edit_region(a.label_map, b.label_map, req.repaint.dilate_px)
                       for a, b in zip(normals, abnormal, strict=True)]
        t2 = time.perf_counter()
        repainted = yield from _forward(
            self._repaint(call, images, abnormal, regions, seeds, req.guidance,
                          req.control_scale, req.repaint, should_stop, req.appearance),
            "repaint")
        twin = _twins(repainted, images, regions,
                      self.tone_curve(req.appearance, req.plane))
        timings["repaint_s"] = time.perf_counter() - t2
        samples = [Sample(seeds[i], normals[i], images[i], abnormal[i], twin[i], regions[i])
                   for i in range(req.n)]
        yield Done(GenerationResult(samples, call.calls, time.perf_counter() - t0, timings,
                                    str(req.appearance), req))

    def _repaint(self, call: CountingCall, images: np.ndarray, layouts: list[Layout],
                 regions: list[np.ndarray], seeds: list[int], guidance: float, control: float,
                 settings: RepaintSettings, should_stop: StopCheck | None = None,
                 appearance: str | None = None) -> Iterator[SamplerEvent]:
        mask = torch.from_numpy(np.stack([feathered(r, settings.feather_px)
                                          for r in regions]))[:, None]
        den = self._conditioning(call, layouts, appearance)(None, guidance, control)
        rp_noise = SampleNoise([s + 7_919 for s in seeds])
        return repaint_progressive(predicting_x0(den, self.ac, self.pred), to_float(images),
                                   mask, self.ac, settings, rp_noise, should_stop)

    def repaint(self, images: np.ndarray, layouts: list[Layout], regions: list[np.ndarray],
                seeds: list[int], guidance: float = DEFAULT_GUIDANCE,
                control_scale: float = DEFAULT_CONTROL_SCALE,
                settings: RepaintSettings | None = None,
                appearance: str | None = None) -> tuple[np.ndarray, int]:
        """Repaint a batch of images (uint8, one plane) inside ``regions``, conditioned on
        ``layouts``; returns the images and the denoiser calls made. ``run`` uses the same
        loop for counterfactual twins; this form lets a caller repaint many references of
        one plane in one batch (and with the unedited layout, as a control)."""
        if not layouts or len({x.plane for x in layouts}) != 1:
            raise InvalidRequestError("layouts", "one batch must hold one plane")
        call = CountingCall(self.backend.call)
        repainted = final(self._repaint(call, images, layouts, regions, seeds, guidance,
                                        control_scale, settings or RepaintSettings(),
                                        appearance=appearance))
        return _twins(repainted, images, regions,
                      self.tone_curve(appearance, layouts[0].plane)), call.calls

    def sample_layouts(self, layouts: list[Layout], seeds: list[int], *,
                       steps: int | None = None, guidance: float | None = None,
                       control_scale: float | None = None,
                       sampler: SamplerName | None = None,
                       appearance: str | None = None) -> tuple[np.ndarray, int]:
        """Generate one image per layout (one plane) in one batch, sample i from seed i's
        noise stream (so the images do not depend on the batch); unset options take the
        weights' recommended sampling, else the request schema's defaults (``resolve``).
        Returns uint8 images and the denoiser calls made."""
        if not layouts or len({x.plane for x in layouts}) != 1:
            raise InvalidRequestError("layouts", "one batch must hold one plane")
        if len(seeds) != len(layouts):
            raise InvalidRequestError("seeds", f"{len(seeds)} given for {len(layouts)} layouts")
        opts = {k: v for k, v in {"steps": steps, "guidance": guidance, "sampler": sampler,
                                  "control_scale": control_scale}.items() if v is not None}
        req = self.resolve(GenerationRequest.model_validate(
            {"plane": layouts[0].plane, "appearance": appearance, **opts}))
        call = CountingCall(self.backend.call)
        sampled = final(self._sample(req, layouts, SampleNoise(seeds), call, None))
        return apply_tone(to_uint8(sampled.x),
                          self.tone_curve(req.appearance, layouts[0].plane)), call.calls

    def sample_states(self, layouts: list[Layout], seeds: list[int], *, steps: int,
                      every: int, guidance: float | None = None,
                      appearance: str | None = None) -> np.ndarray:
        """The DDIM trajectory of one batch (one plane), deterministic: float32 (N, 1 +
        steps / every, H, W) holding the start noise (seed i's stream, as generation draws
        it) and the state after every ``every``-th call (the last: the image, in [-1, 1]).
        What a few-step student learns to jump between (``fetalflex.distill``)."""
        if steps % every:
            raise InvalidRequestError("steps", f"{steps} is not a multiple of every={every}")
        opts: dict[str, Any] = {"plane": layouts[0].plane, "appearance": appearance,
                                "steps": steps, "sampler": "ddim"}
        if guidance is not None:
            opts["guidance"] = guidance
        req = self.resolve(GenerationRequest.model_validate(opts))
        noise = SampleNoise(seeds)
        call = CountingCall(self.backend.call)
        s = self.cfg.image_size
        start = noise((len(layouts), 1, s, s))
        states = [start[:, 0]]
        job = SamplingJob(self._conditioning(call, layouts, req.appearance), start.clone(),
                          noise, self.cfg, self.ac, req.steps, req.guidance, req.control_scale,
                          None)
        for ev in SAMPLERS["ddim"](job):
            if isinstance(ev, Step) and (ev.i + 1) % every == 0:
                states.append(ev.x[:, 0])
        return torch.stack(states, dim=1).float().numpy()

    def run(self, req: GenerationRequest, **kw: Any) -> GenerationResult:
        for ev in self.run_progressive(req, **kw):
            if isinstance(ev, Done):
                return ev.result
        raise RuntimeError("generation ended without a result")  # pragma: no cover
