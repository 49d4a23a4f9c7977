#!/usr/bin/env bash
# The data-rich scaling study (bench/scaling_10m, docs/scaling.md) on one GPU machine, in calls
# of at most ten minutes: prepare the 10M-row synthetic set once, then train the spec's runs
# PROCS at a time (small models leave one GPU mostly idle) until DEADLINE seconds after the
# start, families in priority order. Runs are resumable: a second call on the same machine
# finishes what the first left (each run from its last checkpoint). After each stage the runs
# finished so far in this call and the logs are packed into $OUT (see pack below); the report
# (bootstrap intervals: minutes of CPU) is made where they are unpacked into DIR/runs, joined
# with the points of the kept report (EARLIER, whose points are not trained again here):
#   rankmixer bench scaling --spec scaling_10m --report-only --earlier docs/results/scaling_10m.json --out DIR
#
#   OUT=/tmp/gpu bash scripts/gpu_scaling.sh                     # on a CUDA machine
#   SMALL=1 PROCS=2 OUT=/tmp/gpu bash scripts/gpu_scaling.sh     # tiny data and budget, any machine
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT}
BENCH=${BENCH:-bench_out/scaling_10m}
PROCS=${PROCS:-8}
DEADLINE=${DEADLINE:-540}
SMALL=${SMALL:-0}
FAMILIES=${FAMILIES:-rankmixer-post,dcnv2,wukong,tokenmixer-large,rankmixer-none,oracle,rankmixer-pre,dlrm-mlp,hiformer}
RESULTS=${RESULTS:-/tmp/scaling_10m_logs}  # logs; packed into $OUT/logs.tgz
EARLIER=${EARLIER:-docs/results/scaling_10m.json}  # points already reported; empty: train every point
mkdir -p "$RESULTS" "$OUT"
export PYTHONUNBUFFERED=1

DATA=()
BUDGET=()
if [ "$SMALL" = "1" ]; then
  DATA=(data.preset_options.rows_train=40000 data.preset_options.rows_valid=4000 data.preset_options.rows_test=4000
        data.prepared_dir=data_cache/synthetic-scaling-small train.checkpoint_every_steps=2)
  BUDGET=(--budget samples=16384)
fi

# What comes back from a call is at most 8 files of 16 MiB, 64 MiB in all: the runs that finished
# during this call (PACK_ALL=1: every finished run) go into up to 6 archives of 7 runs each
# (about 2 MB a run: its metrics, logged windows, config and test predictions), the logs into one.
touch "$RESULTS/.call_start"
pack() {
  rm -f "$OUT"/runs_*.tgz
  if [ -d "$BENCH/runs" ]; then
    local list=$RESULTS/.to_pack
    for r in $(ls "$BENCH/runs"); do
      local m=$BENCH/runs/$r/metrics.json
      if [ -f "$m" ] && { [ "${PACK_ALL:-0}" = "1" ] || [ "$m" -nt "$RESULTS/.call_start" ]; }; then echo "$r"; fi
    done | head -n 42 > "$list"
    split -l 7 -d "$list" "$RESULTS/.part_"
    for part in "$RESULTS"/.part_*; do
      [ -s "$part" ] || continue
      tar czf "$OUT/runs_${part##*_}.tgz" -C "$BENCH/runs" $(sed 's|$|/metrics.json|' "$part") \
        $(sed 's|$|/metrics.jsonl|' "$part") $(sed 's|$|/config.yaml|' "$part") $(sed 's|$|/test_predictions.npz|' "$part")
    done
    rm -f "$RESULTS"/.part_*
  fi
  tar czf "$OUT/logs.tgz" -C "$RESULTS" --exclude='./.*' . 2>/dev/null || true
}

stage() {  # stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== stage $name (limit ${limit}s)"
  timeout --signal=INT --kill-after=20 "$limit" "$@" >>"$RESULTS/$name.log" 2>&1
  local rc=$?
  pkill -INT -f 'multiprocessing.spawn' 2>/dev/null; sleep 2; pkill -KILL -f 'multiprocessing.spawn' 2>/dev/null
  echo "$name rc=$rc ${SECONDS}s total, $((SECONDS - t0))s" | tee -a "$RESULTS/stages.txt"
  tail -n 30 "$RESULTS/$name.log"
  pack
}

stage env 30 bash -c "nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv || true; nproc; free -g | head -2"
stage prepare 300 "$PY" -c "
import sys, time
from rankmixer.config import load_config
from rankmixer.experiment import prepare_data
t0 = time.time()
fm = prepare_data(load_config('synthetic_dcnv2', ['data=synthetic_10m', *sys.argv[1:]]).data)
print('prepared', fm.splits['train'].rows, 'training rows in', round(time.time() - t0), 's')
" "${DATA[@]}"
left=$((DEADLINE - SECONDS))
if [ "$left" -gt 30 ]; then
  HELD=()
  if [ -n "$EARLIER" ] && [ -f "$EARLIER" ] && [ "$SMALL" != "1" ]; then HELD=(--earlier "$EARLIER"); fi
  stage train "$left" "$PY" -m rankmixer bench scaling --spec scaling_10m --families "$FAMILIES" \
    --processes "$PROCS" --out "$BENCH" "${HELD[@]}" "${BUDGET[@]}" "${DATA[@]}"
fi
ls "$BENCH/runs" 2>/dev/null | while read -r r; do
  [ -f "$BENCH/runs/$r/metrics.json" ] && echo "finished $r" || echo "unfinished $r"
done | sort | tee "$RESULTS/runs.txt" | tail -n 50
pack
ls -la "$OUT"
