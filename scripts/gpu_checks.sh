#!/usr/bin/env bash
# One short, staged GPU session: the measurements docs/performance.md and docs/sequence.md owe,
# in priority order, each stage under its own time limit so that a slow stage costs only itself.
# Every stage writes its JSON and log to $RESULTS; after each stage the folder is packed into
# $OUT/gpu_checks.tgz, so whatever finished comes back even if the session's limit cuts the rest.
#
#   OUT=/tmp/gpu bash scripts/gpu_checks.sh                       # on a CUDA machine
#   DEVICE=cpu SMALL=1 OUT=/tmp/gpu bash scripts/gpu_checks.sh    # the same stages on CPU, tiny
#
# Stages (seconds are the limits on a GPU; SMALL=1 shrinks sizes, not the limits):
#   env       nvidia-smi, torch build, the device's name
#   speed     rankmixer-100m and rankmixer-1b: training and inference, fp32 and bf16, MFU
#             against the matmul peak measured in the same run; 100m against the public-style
#             per-token loop baseline
#   seqlen    the sequence models at L = 50, 200, 1000 (training samples/s, allocator peak)
#   moe       rankmixer-100m-moe: dense training, sparse vs dense inference
#   compiled  rankmixer-100m under torch.compile(mode=reduce-overhead), bf16
set -uo pipefail
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:?set OUT}
RESULTS=${RESULTS:-$OUT/gpu_checks}
SMALL=${SMALL:-0}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor_cache}

if [ "$SMALL" = "1" ]; then
  M100=rankmixer-tiny; M1B=rankmixer-tiny; MMOE=rankmixer-tiny-moe; BATCHES=8; TB=8; TB_MOE=8
  ROUNDS=1; PEAK=(--peak-shape 32x32x32); SEQ=(--lengths 8,16 --batch-size 8 --models din,pyramid-mixer --rounds 1)
else
  M100=rankmixer-100m; M1B=rankmixer-1b; MMOE=rankmixer-100m-moe; BATCHES=512,4096; TB=4096; TB_MOE=512
  ROUNDS=3; PEAK=(); SEQ=(--batch-size 512 --rounds 3)
fi

pack() { tar czf "$OUT/gpu_checks.tgz" -C "$RESULTS" . 2>/dev/null || true; }

stage() {  # stage NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== stage $name (limit ${limit}s)"
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc ${SECONDS}s total, $((SECONDS - t0))s" | tee -a "$RESULTS/stages.txt"
  tail -n 25 "$RESULTS/$name.log"
  pack
}

stage env 30 bash -c "nvidia-smi || true; $PY -c 'import torch, platform; print(torch.__version__, torch.version.cuda, platform.python_version()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no cuda\")'; $PY -m rankmixer --help | head -5"

SPEED=("$PY" -m rankmixer bench speed --device "$DEVICE" --batch-sizes "$BATCHES" --train-batch "$TB"
  --precision fp32 --precision bf16 "${PEAK[@]}" --rounds "$ROUNDS" --optimizer rmsprop --no-dcn --no-moe --no-ablations)
stage speed_100m 110 "${SPEED[@]}" --model "$M100" --json "$RESULTS/speed_100m.json"
stage speed_1b 130 "${SPEED[@]}" --model "$M1B" --no-baseline --json "$RESULTS/speed_1b.json"
stage seqlen 140 "$PY" -m rankmixer bench sequence-length --device "$DEVICE" "${SEQ[@]}" --out "$RESULTS/sequence_length.json"
stage moe 70 "$PY" -m rankmixer bench speed --device "$DEVICE" --model "$MMOE" --batch-sizes "${BATCHES%%,*}" \
  --train-batch "$TB_MOE" --precision bf16 "${PEAK[@]}" --rounds "$ROUNDS" --optimizer rmsprop --no-dcn \
  --no-baseline --no-ablations --json "$RESULTS/speed_100m_moe.json"
if [ "$DEVICE" = "cuda" ]; then
  stage compiled 80 "${SPEED[@]}" --model "$M100" --no-baseline --no-inference-copy --compile reduce-overhead \
    --json "$RESULTS/speed_100m_compiled.json"
fi
echo "wrote $OUT/gpu_checks.tgz"
