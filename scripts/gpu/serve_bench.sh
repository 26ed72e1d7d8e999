#!/usr/bin/env bash
# One lent-GPU run for the serving path (GPU_PLAN step 3): the gRPC service with the torch
# backend on the GPU (in-process, with and without cross-request batching) at client
# concurrency 1..256, then the denoiser variants the first run did not cover (bf16,
# channels-last, torch.compile). Results under $OUT (each part bounded by its own timeout,
# so what finished comes back). The machine's grpcio is older than our generated code:
# scripts/gpu/fetch_wheels.sh --serve adds grpcio/protobuf wheels. Usage, from the root:
#   bash scripts/gpu/serve_bench.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-/tmp/gpu-out}"
mkdir -p "$out"
exec > >(tee -a "$out/log_serve.txt") 2>&1
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
export PYTHONUNBUFFERED=1
# Session 13's run measured "torch" on the CPU: torch saw no GPU inside the e2e process
# though bench gpu saw it in the same run. Say what the process sees before it is measured.
bash scripts/gpu/run.sh python3 -c "import torch; a = torch.cuda.is_available(); \
import bench.serving, service.server; print('cuda before/after the service imports:', a, \
torch.cuda.is_available())"
timeout "${E2E_TIMEOUT:-120}" bash scripts/gpu/run.sh python3 -m bench e2e \
  --setups torch-cuda torch-cuda+batching --concurrency 1 4 16 64 256 --out "$out/e2e" \
  || echo "e2e rc $?"
timeout "${VARIANTS_TIMEOUT:-45}" bash scripts/gpu/run.sh python3 -m bench gpu \
  --variants eager-bf16 channels-last-fp16 cuda-graph-fp16 \
  --batches 1 32 128 512 --out "$out/variants" || echo "variants rc $?"
# torch.compile (max-autotune) may take minutes to tune: alone, so a timeout loses only it.
timeout "${COMPILE_TIMEOUT:-70}" bash scripts/gpu/run.sh python3 -m bench gpu \
  --variants compile-fp16 --batches 1 32 512 --out "$out/compile" || echo "compile rc $?"
ls -la "$out" "$out"/*; date -u
