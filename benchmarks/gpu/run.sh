#!/usr/bin/env bash
# The GPU suite: correctness on CUDA, then `layerfast bench` on a Llama-3-8B-shaped model with
# random bf16 weights, in one command that ends well inside 8 minutes on one H100.
#
#   benchmarks/gpu/run.sh [--out DIR]     on a CUDA machine (default DIR: $OUT, else gpu-results)
#   benchmarks/gpu/run.sh --dry-run       the same steps on the CPU: tiny model, TRITON_INTERPRET=1
#
# Runs from the source tree (PYTHONPATH), installs nothing, downloads nothing. Every step has its
# own time limit; a step that fails or runs out of time is reported and the next one still runs.
# Files in DIR (7): machine.txt, pytest.txt, bench.txt, bench.json, bench.csv, summary.txt and
# suite.log (everything printed). Exit status: 0 when every step passed, else 1.
# See benchmarks/gpu/README.md.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DRY=0
DIR=${OUT:-$ROOT/gpu-results}
PYTHON=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) DIR=$2; shift ;;
    --out=*) DIR=${1#--out=} ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (use --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$DIR" || { echo "run.sh: cannot create --out $DIR" >&2; exit 2; }
DIR=$(cd "$DIR" && pwd)

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if [ "$DRY" = 1 ]; then
  # the CPU stands in for the GPU; the packages the GPU image lacks are hidden from Python
  export PYTHONPATH="$ROOT/benchmarks/gpu/device_like:$PYTHONPATH"
  export LAYERFAST_TEST_DEVICE=cpu TRITON_INTERPRET=1
  MODEL=tiny DEVICE=cpu BENCH_BUDGET=40 PYTEST_LIMIT=240 BENCH_LIMIT=150
  BENCH_EXTRA=(--quick --kernel-bytes 64MiB --limit 8)
else
  MODEL=llama-3-8b DEVICE=cuda BENCH_BUDGET=200 PYTEST_LIMIT=120 BENCH_LIMIT=300
  BENCH_EXTRA=(--limit 96)
fi

exec > >(tee "$DIR/suite.log") 2>&1
status=0
step() { echo; echo "== $1 ($(date -u +%H:%M:%S))"; }
why() { case "$1" in 124|137) echo " (out of time)" ;; esac; }

step "machine"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "dry run: $DRY"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null \
    || echo "nvidia-smi: not available"
  "$PYTHON" -c 'import sys, os, torch, transformers, platform
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| transformers", transformers.__version__, "| cores", os.cpu_count())
try:
    import triton; print("triton", triton.__version__)
except Exception as e: print("triton: not importable:", e)
print("cuda available:", torch.cuda.is_available())'
} 2>&1 | tee "$DIR/machine.txt"

step "1. correctness on $DEVICE: pytest -m gpu (limit ${PYTEST_LIMIT}s)"
timeout -k 10 "$PYTEST_LIMIT" "$PYTHON" -m pytest -q -p no:cacheprovider -p no:timeout -m gpu \
  "$ROOT/tests/gpu" "$ROOT/tests/activations/test_finish.py" -o addopts="" -rfE 2>&1 \
  | tee "$DIR/pytest.txt"
rc=$?
[ "$rc" = 0 ] || { echo "!! pytest exited $rc$(why "$rc")"; status=1; }

step "2. layerfast bench --random $MODEL on $DEVICE (budget ${BENCH_BUDGET}s, limit ${BENCH_LIMIT}s)"
timeout -k 10 "$BENCH_LIMIT" "$PYTHON" -m layerfast.cli bench --random "$MODEL" --device "$DEVICE" \
  --out "$DIR" --time-budget "$BENCH_BUDGET" "${BENCH_EXTRA[@]}"
rc=$?
[ "$rc" = 0 ] || { echo "!! bench exited $rc$(why "$rc")"; status=1; }

step "3. the goals"
"$PYTHON" "$ROOT/benchmarks/gpu/summary.py" "$DIR" 2>&1 | tee "$DIR/summary.txt"
[ "${PIPESTATUS[0]}" = 0 ] || status=1

step "done: exit $status, files in $DIR"
ls -la "$DIR"
exit $status
