#!/usr/bin/env bash
# Download, on this (networked) machine, the wheels that the lent GPU machine lacks, for its
# Python 3.12, into .whl/ (gitignored; it travels with the working tree, < 16 MiB).
# The GPU machine has torch + CUDA, numpy, scipy, pillow, safetensors, tqdm, matplotlib,
# onnx, onnxruntime (CPU), grpcio, prometheus-client; not diffusers or pydantic.
# Usage: scripts/gpu/fetch_wheels.sh [--serve] [DEST]        (DEST default: .whl)
#   --serve also fetches what the gRPC service needs there (its grpcio, 1.84, is older than
#   our generated code's floor): grpcio, health checking, reflection, protobuf, pydicom.
set -euo pipefail
cd "$(dirname "$0")/../.."
serve=0
if [ "${1:-}" = "--serve" ]; then serve=1; shift; fi
dest="${1:-.whl}"
py="${PYTHON:-.venv/bin/python}"
mkdir -p "$dest"
# Pure-python or cp312 wheels, no dependencies resolved here: the list is the closure of
# what diffusers / pydantic(-settings) need minus what the GPU machine already has. Its own
# huggingface-hub (1.33, with requests, regex, filelock, pyyaml, hf-xet) satisfies diffusers
# (>= 1.32): carrying hub 2.x would need httpx2/httpcore2/click too and shadow its stack.
"$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$dest" \
  diffusers==0.42.1 pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 \
  annotated-types typing-inspection typing-extensions python-dotenv importlib-metadata
if [ "$serve" = 1 ]; then
  "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dest" \
    grpcio==1.85.3 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1 \
    protobuf==7.36.2 pydicom==3.0.2
fi
du -sh "$dest"
