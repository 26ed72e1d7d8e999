#!/usr/bin/env bash
# Download, on this (networked) machine, the wheels that the lent GPU machine lacks, for its
# Python 3.12, into .whl/ (gitignored; it travels with the working tree, < 16 MiB).
# The GPU machine has torch + CUDA, numpy, scipy, pillow, safetensors, tqdm, matplotlib,
# onnx, onnxruntime (CPU), grpcio, prometheus-client; not diffusers or pydantic.
# Usage: scripts/gpu/fetch_wheels.sh [DEST]        (DEST default: .whl)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest="${1:-.whl}"
py="${PYTHON:-.venv/bin/python}"
mkdir -p "$dest"
# Pure-python or cp312 wheels, no dependencies resolved here: the list is the closure of
# what diffusers / pydantic(-settings) need minus what the GPU machine already has.
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dest" \
  diffusers pydantic pydantic-core pydantic-settings annotated-types typing-inspection \
  typing-extensions python-dotenv importlib-metadata zipp huggingface-hub regex requests \
  urllib3 idna certifi charset-normalizer filelock fsspec packaging pyyaml hf-xet httpx \
  httpcore h11 anyio sniffio
du -sh "$dest"
