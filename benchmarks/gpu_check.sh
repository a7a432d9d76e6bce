#!/usr/bin/env bash
# One GPU check, ready for when a device machine is lent: the CUDA tests, then the warp,
# loader, training-loop and depth benchmarks on the device, into ONE report file.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine (~8 min)
#   bash benchmarks/gpu_check.sh --device cpu    # the same steps on a CPU, shortened (tested)
#
# Needs the project installed (.venv, or PYTHON=...). Writes $OUT/gpu_check_report.txt
# (OUT defaults to runs/gpu_check); every step's output goes there, with its exit status,
# and a failing step does not stop the others.
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --device cuda|cpu)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check_report.txt"
export HF_HUB_OFFLINE=1
if [ "$DEVICE" = cpu ]; then
  SHORT=1; BATCHES=2; SECONDS_EACH=1; STEPS_SIZES="64"; BS=4
else
  SHORT=0; BATCHES=20; SECONDS_EACH=5; STEPS_SIZES="256 512"; BS=32
fi
CACHE="$OUT/cache"

step() {   # step NAME COMMAND...: run it, append its output and status to the report
  local name="$1"; shift
  echo "== $name" | tee -a "$REPORT"
  echo "\$ $*" >> "$REPORT"
  local t0=$SECONDS
  "$@" >> "$REPORT" 2>&1
  local rc=$?
  echo "-- $name: exit $rc, $((SECONDS - t0)) s" | tee -a "$REPORT"
  return 0
}

{
  echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) device=$DEVICE"
  "$PY" -c "import torch, platform; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine())"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} > "$REPORT" 2>&1

if [ "$SHORT" = 1 ]; then
  step "pytest -m cuda (skipped without CUDA)" "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_warp.py
else
  step "pytest -m cuda" "$PY" -m pytest -q -m cuda -p no:cacheprovider
fi
step "warp benchmark" "$PY" benchmarks/bench_warp.py --device "$DEVICE" --repeat $((SHORT ? 1 : 5))
step "depth cache for the loop" "$PY" precompute_depth.py --demo --cache-dir "$CACHE" \
  --max-frames 16 --quiet --device "$DEVICE"
for size in $STEPS_SIZES; do
  for amp in off auto; do
    for compile in false true; do
      [ "$SHORT" = 1 ] && [ "$compile" = true ] && continue
      [ "$DEVICE" = cpu ] && [ "$amp" = auto ] && continue
      step "training loop ${size}² batch $BS amp=$amp compile=$compile" "$PY" benchmarks/bench_train.py \
        --config configs/image.yaml --batches "$BATCHES" "data.cache_dir=$CACHE" \
        "run.device=$DEVICE" "data.crop=$size" "data.batch_size=$BS" "data.num_workers=2" \
        "train.amp='$amp'" "train.compile=$compile" "data.scale_range=[1.0,1.5]"
    done
  done
done
step "loader (demo media; bench_loader.py makes the large media on its own)" "$PY" - <<PYEOF
import sys; sys.argv = ["bench_loader"]
sys.path.insert(0, "benchmarks")
import bench_loader
for src in ("cache", "source"):
    print(src, "256²", round(bench_loader.rate(__import__("pathlib").Path("$CACHE"), 256, 1, src, $SECONDS_EACH), 1), "samples/s per worker")
PYEOF
step "depth precompute" "$PY" benchmarks/bench_depth.py --device "$DEVICE" --backend fallback \
  --workers 0,2 --max-frames $((SHORT ? 4 : 32))
echo "report: $REPORT"
