# FetalFlex orchestrator image (CPU, embedded ONNX Runtime backend).
# Issue 7 extends this with the gRPC service entry point, a non-root user and health checks.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# torch first, pinned. Pass TORCH_INDEX_URL=<your PyTorch CPU wheel index or mirror> so the
# image gets the CPU build (a plain PyPI install on x86_64 is a CUDA build of several GB).
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi
COPY pyproject.toml README.md ./
COPY fetalflex ./fetalflex
RUN pip install .
RUN useradd --create-home --uid 10001 fetalflex
USER 10001
ENTRYPOINT ["fetalflex"]
CMD ["planes"]
