"""Service settings: ``fetalflex serve`` flags, an optional JSON file, ``FETALFLEX_*``
environment variables, defaults.

Precedence (``ServiceSettings.resolve``): flags > ``--config`` file > environment > defaults.
The file sits above the environment so that a deployment's file (``deploy/``'s ConfigMap)
wins over the image's ``ENV`` lines, which act as the image's defaults. Defaults live here
and nowhere else; unknown keys are rejected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fetalflex.model.signature import DEFAULT_TRITON_MODEL
from fetalflex.request import (
    COUNT_MAX,
    DEFAULT_BACKEND,
    DEFAULT_DEVICE,
    DEFAULT_PRECISION,
    STEPS_MAX,
    BackendName,
    Device,
    Precision,
)

ENV_PREFIX = "FETALFLEX_"
# 9090 is Prometheus' own port (a Prometheus beside the service would collide); 9464 is the
# OpenTelemetry Prometheus exporter's default.
DEFAULT_METRICS_PORT = 9464


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid",
                                      env_file=None, frozen=True)

    host: str = Field(default="127.0.0.1", description="address every port listens on")
    port: int = Field(default=50051, ge=0, le=65535,
                      description="the gRPC API (0 = any free port)")
    metrics_port: int = Field(default=DEFAULT_METRICS_PORT, ge=0, le=65535,
                              description="Prometheus /metrics over HTTP (0 = off)")
    # Plaintext port serving ONLY grpc.health.v1 (same status as the API port's health), for
    # probes that cannot speak (m)TLS, e.g. kubelet's grpc probes. 0 = no such port.
    health_port: int = Field(default=0, ge=0, le=65535,
                             description="plaintext port serving grpc.health.v1 only (0 = off)")
    backend: BackendName = Field(default=DEFAULT_BACKEND,
                                 description="where the denoiser runs (auto: the engine "
                                             "`fetalflex tune` measured fastest here)")
    precision: Precision = Field(
        default=DEFAULT_PRECISION,
        description="arithmetic: fp32; int8, the embedded graph (static, calibrated on "
                    "phantoms; quality in docs/EVALUATION.md); bf16, the torch backend "
                    "(CPUs with AVX-512 BF16 or AMX, GPUs). backend=auto picks both")
    device: Device = Field(default=DEFAULT_DEVICE,
                           description="device of the torch backend (cuda: the GPU path)")
    weights: Path | None = Field(default=None,
                                 description="denoiser weights folder (unset: the shipped ones)")
    triton_url: str | None = Field(default=None, description="Triton gRPC address (host:port)")
    triton_model: str = Field(default=DEFAULT_TRITON_MODEL, description="Triton model name")
    max_concurrent: int = Field(default=4, ge=1, le=256,
                                description="generations running at once")
    max_queued: int = Field(default=16, ge=0, le=10_000,
                            description="generations waiting beyond that; more are shed")
    # Bounded by the request schema's own limits: a larger setting fails at start-up, naming
    # the setting, instead of letting requests through that the schema then refuses.
    max_count: int = Field(default=16, ge=1, le=COUNT_MAX,
                           description=f"images per request (at most {COUNT_MAX})")
    max_steps: int = Field(default=200, ge=1, le=STEPS_MAX,
                           description=f"sampler steps per request (at most {STEPS_MAX})")
    # Denoiser calls of one repaint schedule (the default 20/5/2 makes 35; the schema allows
    # schedules of several thousand, which one request must not be able to ask for).
    max_repaint_calls: int = Field(default=200, ge=1, le=10_000)
    max_message_bytes: int = Field(default=16 * 2**20, ge=2**16)
    default_deadline_s: float = Field(default=300.0, gt=0)
    grace_s: float = Field(default=20.0, ge=0,
                           description="seconds in-flight generations get at shutdown")
    batch_window_ms: float = Field(default=4.0, ge=0,
                                   description="how long a denoiser call waits for others")
    # In-process backends: merge concurrent requests' denoiser calls (Triton batches itself).
    batch_across_requests: bool = Field(
        default=True, description="merge concurrent requests' denoiser calls (in-process "
                                  "backends; off for int8 on few cores: docs/PERFORMANCE.md)")
    max_batch_rows: int = Field(default=32, ge=1,
                                description="rows of one merged denoiser call")
    reflection: bool = Field(default=True, description="gRPC server reflection")
    tls_cert: Path | None = Field(default=None,
                                  description="server certificate (PEM); with tls_key: TLS")
    tls_key: Path | None = Field(default=None, description="the certificate's key (PEM)")
    tls_client_ca: Path | None = Field(
        default=None, description="CA of client certificates; set: mTLS required")
    auth_token_file: Path | None = Field(default=None,
                                         description="bearer token required when set")
    threads: int | None = Field(default=None,
                                description="CPU threads of an in-process backend (unset: "
                                            "the runtime's choice)")

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServiceSettings:
        seen: dict[int, str] = {}
        for key in ("port", "metrics_port", "health_port"):
            value = getattr(self, key)
            if value and value in seen:  # 0 is "off" (or "any free port" for the API)
                raise ValueError(f"{seen[value]} and {key} are both {value}: give each its "
                                 "own port")
            seen[value] = key
        return self

    @classmethod
    def resolve(cls, flags: Mapping[str, Any] | None = None,
                config_file: Path | None = None) -> ServiceSettings:
        """Flags (None = not given) over the file's keys over ``FETALFLEX_*`` over defaults."""
        values: dict[str, Any] = {}
        if config_file is not None:
            try:
                loaded = json.loads(config_file.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"config: {config_file} is not valid JSON ({exc.msg}, line "
                                 f"{exc.lineno})") from None
            if not isinstance(loaded, dict):
                raise ValueError(f"config: {config_file} must hold a JSON object of settings")
            values.update(loaded)
        values.update({k: v for k, v in (flags or {}).items() if v is not None})
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path) -> ServiceSettings:
        return cls.resolve(config_file=path)


# The settings an operator changes often: ``fetalflex serve`` takes each as a flag
# (``--max-batch-rows`` for ``max_batch_rows``); the rest come from the file or environment.
SERVE_FLAGS = ("host", "port", "health_port", "metrics_port", "backend", "precision", "device",
               "weights", "triton_url", "triton_model", "max_concurrent", "max_queued",
               "max_batch_rows", "batch_window_ms", "batch_across_requests", "max_count",
               "max_steps", "grace_s", "reflection", "tls_cert", "tls_key", "tls_client_ca",
               "auth_token_file", "threads")
