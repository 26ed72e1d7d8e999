"""The proto's comments state the request schema's defaults (one source of truth: the
schema; the proto documents it and this test keeps the two equal)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fetalflex.request import DEFAULT_SAMPLER, GenerationRequest, RepaintSettings

PROTO = Path(__file__).resolve().parents[2] / "proto/fetalflex/v1/fetalflex.proto"
SAMPLER_WORDS = {"dpmsolver++": "DPM-Solver++", "ddim": "DDIM", "two-stage": "two-stage"}


def _comment_default(message: str, field: str) -> float:
    body = re.search(rf"message {message} \{{(.*?)\n\}}", PROTO.read_text(), re.S)
    assert body, message
    line = next(x for x in body.group(1).splitlines()
                if re.search(rf"\b{field} = \d+;", x))
    m = re.search(r"default ([0-9.]+)", line)
    assert m, f"{message}.{field}: no 'default N' in its comment: {line.strip()}"
    return float(m.group(1))


@pytest.mark.parametrize(("message", "field", "schema"), [
    ("GenerateRequest", "count", GenerationRequest.model_fields["n"].default),
    ("GenerateRequest", "steps", GenerationRequest.model_fields["steps"].default),
    ("GenerateRequest", "guidance_scale", GenerationRequest.model_fields["guidance"].default),
    ("GenerateRequest", "control_scale",
     GenerationRequest.model_fields["control_scale"].default),
    *[("RepaintOptions", f, RepaintSettings.model_fields[f].default)
      for f in ("steps", "jump_length", "jump_n_sample", "feather_px", "dilate_px")],
])
def test_proto_comments_state_the_schema_defaults(message: str, field: str,
                                                  schema: float) -> None:
    assert _comment_default(message, field) == pytest.approx(schema)


def test_the_unset_sampler_is_the_schema_default() -> None:
    line = next(x for x in PROTO.read_text().splitlines() if "SAMPLER_UNSPECIFIED = 0" in x)
    assert SAMPLER_WORDS[DEFAULT_SAMPLER] in line
