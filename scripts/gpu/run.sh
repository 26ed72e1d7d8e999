#!/usr/bin/env bash
# Run a command on the lent GPU machine (or anywhere) with the wheels of .whl/ installed into
# a private target first: the machine starts bare each time and cannot reach an index.
# Usage (from the repository root, e.g. through the device tool):
#   bash scripts/gpu/run.sh python3 -m fetalflex.cli bench gpu --out "$OUT/bench"
#   bash scripts/gpu/run.sh python3 -m fetalflex.cli train --config configs/gpu128.json ...
# WHEELS (default .whl) and SITE (default /tmp/fetalflex-site) may be overridden.
set -euo pipefail
cd "$(dirname "$0")/../.."
wheels="${WHEELS:-.whl}"
site="${SITE:-/tmp/fetalflex-site}"
shopt -s nullglob
files=("$wheels"/*.whl)
if [ -f "$site/.fetalflex-installed" ]; then
  :  # installed by an earlier call on this machine
elif [ "${#files[@]}" -gt 0 ]; then
  python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$site" \
    "${files[@]}" && touch "$site/.fetalflex-installed"
else
  echo "run.sh: no wheels in $wheels (run scripts/gpu/fetch_wheels.sh first); using the" \
       "interpreter's own packages" >&2
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
exec "$@"
