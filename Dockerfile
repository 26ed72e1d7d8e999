# syntax=docker/dockerfile:1.7
# FetalFlex images. Targets:
#   orchestrator  the gRPC service (CPU; embedded ONNX Runtime, or a client of Triton)
#   triton        NVIDIA Triton with the generated model repository (GPU)
# Build: docker build --target orchestrator --build-arg TORCH_INDEX_URL=<CPU wheel index> -t fetalflex:0.1.0 .
#        docker build --target triton -t fetalflex-triton:0.1.0 .
# Bases are pinned by version tag; pin digests (@sha256:...) in your registry mirror.

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
# torch pinned, CPU build: pass the PyTorch CPU wheel index (or a mirror) here; a plain
# PyPI install on x86_64 is a CUDA build of several GB.
ARG TORCH_INDEX_URL=""
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fetalflex ./fetalflex
COPY service ./service
COPY export ./export
COPY proto ./proto
COPY model_repository ./model_repository
RUN pip install . \
 && fetalflex export repository --with-onnx --out /src/model_repository --build /tmp/onnx \
 && rm -rf /tmp/onnx

# ---------------------------------------------------------------- orchestrator
FROM ${PYTHON_IMAGE} AS orchestrator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    PATH=/opt/venv/bin:$PATH FETALFLEX_HOST=0.0.0.0 FETALFLEX_PORT=50051 \
    FETALFLEX_METRICS_PORT=9464 FETALFLEX_HEALTH_PORT=50052 FETALFLEX_CACHE=/var/cache/fetalflex
RUN groupadd --gid 10001 fetalflex \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin fetalflex \
 && mkdir -p /var/cache/fetalflex && chown 10001:10001 /var/cache/fetalflex
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
# 50051 API (TLS/mTLS when configured), 9464 metrics, 50052 plaintext health-only gRPC: the
# HEALTHCHECK (like kubelet's grpc probes) asks there, so it works whatever the API's TLS.
EXPOSE 50051 9464 50052
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["fetalflex", "health", "--target", "127.0.0.1:50052"]
ENTRYPOINT ["fetalflex"]
CMD ["serve"]

# ---------------------------------------------------------------- triton
FROM ${TRITON_IMAGE} AS triton
COPY --from=builder /src/model_repository /models
COPY deploy/triton/entrypoint.sh /usr/local/bin/fetalflex-triton
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["curl", "-sf", "http://127.0.0.1:8000/v2/health/ready"]
ENTRYPOINT ["/usr/local/bin/fetalflex-triton"]
