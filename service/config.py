"""Service settings: environment variables (``FETALFLEX_*``) and an optional file.

Defaults live here and nowhere else; unknown keys are rejected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FETALFLEX_", extra="forbid",
                                      env_file=None, frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int = Field(default=9090, ge=0, le=65535)  # 0 = no metrics server
    # Plaintext port serving ONLY grpc.health.v1 (same status as the API port's health), for
    # probes that cannot speak (m)TLS, e.g. kubelet's grpc probes. 0 = no such port.
    health_port: int = Field(default=0, ge=0, le=65535)
    backend: Literal["embedded", "torch", "triton"] = "embedded"
    weights: Path | None = None
    triton_url: str | None = None
    triton_model: str = "fetalflex_denoiser_cpu"
    max_concurrent: int = Field(default=4, ge=1, le=256)  # generations running at once
    max_queued: int = Field(default=16, ge=0, le=10_000)  # waiting beyond that: shed
    max_count: int = Field(default=16, ge=1, le=256)
    max_steps: int = Field(default=200, ge=1, le=1000)
    # Denoiser calls of one repaint schedule (the default 20/5/2 makes 35; the schema allows
    # schedules of several thousand, which one request must not be able to ask for).
    max_repaint_calls: int = Field(default=200, ge=1, le=10_000)
    max_message_bytes: int = Field(default=16 * 2**20, ge=2**16)
    default_deadline_s: float = Field(default=300.0, gt=0)
    grace_s: float = Field(default=20.0, ge=0)
    batch_window_ms: float = Field(default=4.0, ge=0)
    # In-process backends: merge concurrent requests' denoiser calls (Triton batches itself).
    batch_across_requests: bool = True
    max_batch_rows: int = Field(default=32, ge=1)
    reflection: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: clients must present a certificate (mTLS)
    auth_token_file: Path | None = None  # bearer token required when set
    threads: int | None = None

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
    def from_file(cls, path: Path) -> ServiceSettings:
        import json

        return cls.model_validate(json.loads(path.read_text()))
