"""Prometheus metrics, declared once, units in the names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_SECONDS = Histogram(
    "fetalflex_request_duration_seconds", "gRPC request duration by method and status code",
    ["method", "code"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300))
DENOISER_CALL_SECONDS = Histogram(
    "fetalflex_denoiser_call_duration_seconds", "One batched denoiser call, by backend",
    ["backend"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
BATCH_ROWS = Histogram(
    "fetalflex_denoiser_batch_rows", "Rows per denoiser call (after batching)",
    registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
MODEL_INFO = Gauge("fetalflex_model_info", "The served denoiser (value 1): version, backend, "
                   "precision", ["version", "backend", "precision"], registry=REGISTRY)
IMAGES_TOTAL = Counter("fetalflex_images_generated_total", "Images generated, by plane",
                       ["plane"], registry=REGISTRY)
IN_FLIGHT = Gauge("fetalflex_generations_in_flight", "Generations running", registry=REGISTRY)
QUEUED = Gauge("fetalflex_generations_queued", "Generations waiting for a slot",
               registry=REGISTRY)
STAGE_SECONDS = Histogram(
    "fetalflex_stage_duration_seconds", "Sampler stage durations", ["stage"],
    registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120))
REJECTED_TOTAL = Counter("fetalflex_requests_rejected_total", "Rejected requests by reason",
                         ["reason"], registry=REGISTRY)
