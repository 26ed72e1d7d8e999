"""The request schema is the one place for a generation's defaults, limits and names."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from fetalflex.cli import build_parser
from fetalflex.request import (
    BACKEND_NAMES,
    COUNT_MAX,
    DEFAULT_CONTROL_SCALE,
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLER_NAMES,
    STEPS_MAX,
    GenerationRequest,
)


def test_importable_without_torch() -> None:
    """The CLI builds its flags from the schema before any model loads."""
    code = ("import sys, fetalflex.request, fetalflex.io.pixels, fetalflex.anatomy.compose; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_schema_holds_its_named_defaults() -> None:
    req = GenerationRequest(plane="TV")
    assert (req.steps, req.guidance, req.control_scale, req.sampler) == (
        DEFAULT_STEPS, DEFAULT_GUIDANCE, DEFAULT_CONTROL_SCALE, DEFAULT_SAMPLER)
    with pytest.raises(ValidationError, match="n"):
        GenerationRequest(plane="TV", n=COUNT_MAX + 1)


@pytest.mark.parametrize("command", ["generate", "gallery", "client"])
def test_cli_defaults_and_choices_come_from_the_schema(command: str) -> None:
    ap = build_parser()
    sub = next(a for a in ap._actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    by_dest = {a.dest: a for a in sub._actions}
    # unset by default (the weights' recommendation, else the schema's), and said so
    for dest, default in (("steps", DEFAULT_STEPS), ("guidance", DEFAULT_GUIDANCE),
                          ("sampler", DEFAULT_SAMPLER)):
        assert by_dest[dest].default is None
        assert f"else the schema's {default})" in str(by_dest[dest].help)
    assert tuple(by_dest["sampler"].choices) == SAMPLER_NAMES
    if "backend" in by_dest:
        assert tuple(by_dest["backend"].choices) == BACKEND_NAMES


def test_service_limits_are_checked_against_the_schema_at_start_up() -> None:
    from service.config import ServiceSettings

    assert ServiceSettings(max_count=COUNT_MAX, max_steps=STEPS_MAX).max_count == COUNT_MAX
    for setting, value in (("max_count", COUNT_MAX + 1), ("max_steps", STEPS_MAX + 1)):
        with pytest.raises(ValidationError) as err:
            ServiceSettings(**{setting: value})
        assert err.value.errors()[0]["loc"] == (setting,)


def test_an_api_count_over_the_limit_names_the_api_field() -> None:
    from service.api.fetalflex.v1 import fetalflex_pb2 as pb
    from service.config import ServiceSettings
    from service.translate import to_job

    settings = ServiceSettings(max_count=COUNT_MAX)
    with pytest.raises(ValueError, match=rf"^count: must be <= {COUNT_MAX}, got 100"):
        to_job(pb.GenerateRequest(plane="TV", count=100), settings, 64)


def test_api_sampler_enum_covers_every_sampler() -> None:
    from service.api.fetalflex.v1 import fetalflex_pb2 as pb
    from service.api_enums import SAMPLER_ENUM, SAMPLER_NAME

    assert tuple(SAMPLER_ENUM) == SAMPLER_NAMES
    assert SAMPLER_NAME[pb.SAMPLER_UNSPECIFIED] == DEFAULT_SAMPLER
    assert set(pb.Sampler.values()) == set(SAMPLER_NAME)


def test_denoiser_rows_follow_the_guidance_interval() -> None:
    """Rows per image: 2 per guided step, 1 at guidance 1 and on the trailing grid's steps
    at or above the weights' guidance_below_t (the grid the samplers use)."""
    from diffusers import DPMSolverMultistepScheduler

    from fetalflex.request import denoiser_rows

    assert denoiser_rows(6, 2.0) == 12 and denoiser_rows(6, 1.0) == 6
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
    for steps in (4, 6, 25):
        sched.set_timesteps(steps)
        guided = int((sched.timesteps < 900).sum())
        assert denoiser_rows(steps, 2.0, 900) == steps + guided
    assert denoiser_rows(6, 2.0, 900) == 11  # 999 unguided; 833 ... 166 guided
    assert denoiser_rows(6, 2.0, 1000) == 12 and denoiser_rows(6, 1.0, 900) == 6
