# FetalFlex orchestrator image (CPU, embedded ONNX Runtime backend).
# Issue 7 extends this with the gRPC service entry point, a non-root user and health checks.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
# torch first, pinned, from the CPU index: never a CUDA build in this image.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY fetalflex ./fetalflex
RUN pip install .
RUN useradd --create-home --uid 10001 fetalflex
USER 10001
ENTRYPOINT ["fetalflex"]
CMD ["planes"]
