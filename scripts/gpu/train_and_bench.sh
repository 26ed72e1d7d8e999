#!/usr/bin/env bash
# One lent-GPU run (GPU_PLAN steps 2 and 3 in one command): render the phantom training set
# on all cores, train the v2 architecture with the GPU recipe fitted to a wall-clock budget
# (fetalflex train --budget-minutes), then the GPU denoiser benchmark. Everything that must
# come home is packed into $OUT as files under 16 MiB (the weights split in parts; rejoin
# with `cat run.tar.part-* | tar x`). Usage, from the repository root:
#   bash scripts/gpu/train_and_bench.sh [BUDGET_MINUTES] [N_PHANTOMS] [CONFIG]
set -uo pipefail
cd "$(dirname "$0")/../.."
budget="${1:-6}"; n="${2:-20000}"; config="${3:-configs/v3_128_gpu.json}"; size="${SIZE:-128}"
out="${OUT:-/tmp/gpu-out}"; work="${WORK:-/tmp/gpu-work}"
mkdir -p "$out" "$work"
log="$out/log.txt"
exec > >(tee -a "$log") 2>&1
run() { bash scripts/gpu/run.sh "$@"; }
pack() {  # the run folder's small files and weights, split for the way home
  (cd "$work" && tar cf - run/final run/log.jsonl run/loss.png run/train_config.json \
     run/budget.json 2>/dev/null) | split -b 15M - "$out/run.tar.part-"
}
date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
run python3 -c "import diffusers, pydantic, torch, fetalflex.cli; print('imports ok', \
torch.__version__, torch.cuda.is_available())" || exit 1
t0=$(date +%s)
run python3 -m fetalflex.cli phantom --n "$n" --size "$size" --seed 1 --workers "$(nproc)" \
  --out "$work/data" --quiet || exit 1
echo "phantoms: $n in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 run python3 -m fetalflex.cli train --config "$config" \
  --data "$work/data/manifest.jsonl" --out "$work/run" --budget-minutes "$budget" --quiet
echo "train rc $? in $(( $(date +%s) - t0 )) s"
pack
if [ "${BENCH:-1}" = 1 ]; then  # BENCH=0: training only (the suite runs the CPU path so)
  weights=(); [ -f "$work/run/final/config.json" ] && weights=(--weights "$work/run/final")
  timeout 120 bash scripts/gpu/run.sh python3 -m bench gpu "${weights[@]}" \
    --out "$work/bench" --batches 1 8 32 128 512 --variants eager-fp32 eager-fp16 \
    cuda-graph-fp16 || echo "bench rc $?"
  (cd "$work" && tar cf "$out/bench.tar" bench 2>/dev/null)
fi
ls -la "$out"; date -u
