"""The sampling a set of weights recommends (``DenoiserConfig.sampling``): what a request
that leaves steps / guidance / sampler unset gets, on every path (engine, API, CLI, gRPC
translation, data-set requests), and what the records say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fetalflex.backends.backends import load_backend
from fetalflex.generation import Engine
from fetalflex.model.config import DenoiserConfig, SamplingDefaults
from fetalflex.model.denoiser import FetalFlexDenoiser
from fetalflex.request import DEFAULT_GUIDANCE, GenerationRequest
from fetalflex.training.init_weights import load_initial
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def recommending(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    torch.manual_seed(0)
    cfg = DenoiserConfig(**TINY_MODEL, appearances=("phantom", "real"),
                         sampling=SamplingDefaults(steps=3, sampler="ddim",
                                                   guidance_by_appearance={"real": 1.0}))
    m = FetalFlexDenoiser(cfg)
    load_initial(m, tiny_weights)
    out = tmp_path_factory.mktemp("w") / "denoiser"
    m.save(out)
    return out


def test_unset_fields_take_the_weights_recommendation(recommending: Path) -> None:
    engine = Engine(load_backend("torch", recommending))
    real = engine.resolve(GenerationRequest(plane="TT", appearance="real"))
    assert (real.steps, real.sampler, real.guidance) == (3, "ddim", 1.0)
    phantom = engine.resolve(GenerationRequest(plane="TT", appearance="phantom"))
    assert (phantom.steps, phantom.guidance) == (3, DEFAULT_GUIDANCE)  # no override: schema's
    given = engine.resolve(GenerationRequest(plane="TT", appearance="real", guidance=1.5,
                                             steps=2))
    assert (given.steps, given.guidance, given.sampler) == (2, 1.5, "ddim")
    res = engine.run(GenerationRequest(plane="TT", appearance="real"))
    assert res.request is not None and res.request.steps == 3
    assert res.denoiser_calls == 3  # guidance 1: one row per step, no unconditional row
    with pytest.raises(ValueError, match="guidance_by_appearance.real"):
        SamplingDefaults(guidance_by_appearance={"real": 99.0})


def test_records_say_what_ran_and_reproduce_it(recommending: Path, tmp_path: Path) -> None:
    from fetalflex.cli import main
    from fetalflex.io.png import read_gray

    assert main(["generate", "--plane", "ac", "--appearance", "real", "--weights",
                 str(recommending), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    rec = json.loads((tmp_path / "a" / "ac.json").read_text())
    assert (rec["request"]["steps"], rec["request"]["guidance"]) == (3, 1.0)
    assert rec["request"]["sampler"] == "ddim" and rec["denoiser_calls"] == 3
    assert main(["generate", "--plane", "ac", "--appearance", "real", "--guidance", "1.5",
                 "--weights", str(recommending), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "b" / "ac.json").read_text())["request"]["guidance"] == 1.5
    assert main(["reproduce", str(tmp_path / "a" / "ac.json"), "--weights",
                 str(recommending), "--out", str(tmp_path / "c")]) == 0
    assert np.array_equal(read_gray(tmp_path / "a" / "ac_000.png"),
                          read_gray(tmp_path / "c" / "ac_000.png"))


def test_unset_over_the_wire_stays_unset() -> None:
    from service.api.fetalflex.v1 import fetalflex_pb2 as pb
    from service.config import ServiceSettings
    from service.dataset_remote import to_proto
    from service.translate import to_job

    job = to_job(pb.GenerateRequest(plane="tt"), ServiceSettings(), 32)
    assert not {"steps", "guidance", "sampler"} & job.request.model_fields_set
    set_ = to_job(pb.GenerateRequest(plane="tt", steps=4, sampler=pb.SAMPLER_DDIM),
                  ServiceSettings(), 32)
    assert {"steps", "sampler"} <= set_.request.model_fields_set
    msg = to_proto(GenerationRequest(plane="TT", seed=3))
    assert not msg.HasField("steps") and not msg.HasField("guidance_scale")
    assert msg.sampler == pb.SAMPLER_UNSPECIFIED
    msg = to_proto(GenerationRequest(plane="TT", steps=5, guidance=1.5, sampler="ddim"))
    assert (msg.steps, msg.guidance_scale, msg.sampler) == (5, 1.5, pb.SAMPLER_DDIM)
