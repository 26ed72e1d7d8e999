"""The API's enum values <-> the request schema's names, one map each (the client and the
gRPC translation both read them)."""

from __future__ import annotations

from typing import Final

from fetalflex.request import DEFAULT_SAMPLER, SamplerName
from service.api.fetalflex.v1 import fetalflex_pb2 as pb

SAMPLER_ENUM: Final[dict[SamplerName, pb.Sampler]] = {
    "ddim": pb.SAMPLER_DDIM, "dpmsolver++": pb.SAMPLER_DPM_SOLVER_PP,
    "two-stage": pb.SAMPLER_TWO_STAGE}
# Unset (0) is the schema's default sampler.
SAMPLER_NAME: Final[dict[pb.Sampler, SamplerName]] = {
    pb.SAMPLER_UNSPECIFIED: DEFAULT_SAMPLER, **{v: k for k, v in SAMPLER_ENUM.items()}}
