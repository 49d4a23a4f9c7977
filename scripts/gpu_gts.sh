#!/usr/bin/env bash
# The GTS runs that a 2-core CPU cannot finish in a session (docs/gts.md: GTS-CNN is about 40 s
# an epoch on res14 at one thread, up to 100 epochs a run) on one GPU machine, in calls of at
# most ten minutes: `rankmixer bench gts` trains the spec's MODELS (3 seeds, the packaged recipe)
# PROCS at a time until DEADLINE seconds, then every finished run's metrics.json is packed into
# $OUT/gts_runs.tgz (a few kB each; the weights stay behind). A second call on the same machine
# trains what the first left (a run is the unit: one cut off is trained again). Unpack into
# bench_out/gts (runs/<run>/metrics.json) where the CPU runs are, and report them all:
#   rankmixer bench gts --report-only --out bench_out/gts
#
#   OUT=/tmp/gpu bash scripts/gpu_gts.sh                                       # on a CUDA machine
#   DEVICE=cpu OUT=/tmp/gpu SPEC=tiny.yaml MODELS=gts-bilstm bash scripts/gpu_gts.sh   # any machine
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:?set OUT}
DEVICE=${DEVICE:-cuda}
SPEC=${SPEC:-gts}
BENCH=${BENCH:-bench_out/gts}
MODELS=${MODELS:-gts-cnn}
SEEDS=${SEEDS:-3}
PROCS=${PROCS:-4}
DEADLINE=${DEADLINE:-540}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

timeout --signal=INT --kill-after=20 "$DEADLINE" "$PY" -m rankmixer bench gts --spec "$SPEC" --models "$MODELS" \
  --seeds "$SEEDS" --device "$DEVICE" --processes "$PROCS" --out "$BENCH" >"$OUT/gts.log" 2>&1
echo "bench gts exited with $? (124: DEADLINE reached; the finished runs are kept)" >>"$OUT/gts.log"
if compgen -G "$BENCH/runs/*/metrics.json" >/dev/null; then
  (cd "$BENCH" && tar czf "$OUT/gts_runs.tgz" runs/*/metrics.json)
fi
tail -n 20 "$OUT/gts.log"
