#!/usr/bin/env bash
# GPU speed table for docs/performance.md: `rankmixer bench speed` for rankmixer-100m and
# rankmixer-1b, dense and MoE, training and inference, fp32 / bf16 / fp16, eager and
# torch.compile(mode=reduce-overhead) (inductor + CUDA graphs). One JSON + log per run in $OUT.
#
#   bash scripts/gpu_speed.sh                       # on a CUDA machine (defaults below)
#   DEVICE=cpu MODELS=rankmixer-tiny BATCHES=8 TRAIN_BATCH=8 ROUNDS=1 COMPILE=none \
#       PRECISIONS="fp32 bf16" PEAK_SHAPES=32x32x32 bash scripts/gpu_speed.sh   # the same code path on CPU, tiny
#
# Memory: rankmixer-1b-moe has 8x the FFN parameters (about 7B); with RMSProp (the paper's
# dense optimizer, one state) and no separate inference copy it needs about 90 GB.
set -euo pipefail
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-"rankmixer-100m rankmixer-1b rankmixer-100m-moe rankmixer-1b-moe"}
BATCHES=${BATCHES:-"512,4096"}
TRAIN_BATCH=${TRAIN_BATCH:-4096}
PRECISIONS=${PRECISIONS:-"fp32 bf16 fp16"}
ROUNDS=${ROUNDS:-5}
COMPILE=${COMPILE:-reduce-overhead}   # "none" skips the compiled runs
OPTIMIZER=${OPTIMIZER:-rmsprop}
PEERS=${PEERS:-1}                     # 0 skips the DCNv2/FuxiCTR + sparse-MoE run
OUT=${OUT:-bench_out/gpu_speed}
PEAK_SHAPES=${PEAK_SHAPES:-}          # e.g. "64x64x64" (MxKxN, space-separated); default: the bench's own
mkdir -p "$OUT"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor_cache}

prec_args=()
for p in $PRECISIONS; do prec_args+=(--precision "$p"); done
peak_args=()
for s in $PEAK_SHAPES; do peak_args+=(--peak-shape "$s"); done

for model in $MODELS; do
  extra=()
  tb=$TRAIN_BATCH
  # MoE training computes every expert: [T*E, B, kD] activations (8x the dense model's)
  case "$model" in *-moe) tb=${TRAIN_BATCH_MOE:-512} ;; esac
  case "$model" in *-1b-moe) extra+=(--no-inference-copy --no-ablations --no-baseline) ;; esac
  "$PY" -m rankmixer bench speed --device "$DEVICE" --model "$model" --batch-sizes "$BATCHES" \
    --train-batch "$tb" "${prec_args[@]}" "${peak_args[@]}" --rounds "$ROUNDS" --optimizer "$OPTIMIZER" \
    --no-dcn --no-moe "${extra[@]}" --json "$OUT/$model.json" 2>&1 | tee "$OUT/$model.log"
  if [ "$COMPILE" != "none" ]; then
    "$PY" -m rankmixer bench speed --device "$DEVICE" --model "$model" --batch-sizes "$BATCHES" \
      --train-batch "$tb" --precision bf16 "${peak_args[@]}" --rounds "$ROUNDS" --optimizer "$OPTIMIZER" \
      --no-dcn --no-moe --no-baseline --no-ablations --no-inference-copy --compile "$COMPILE" \
      --json "$OUT/$model-compiled.json" 2>&1 | tee "$OUT/$model-compiled.log"
  fi
done
# The DCNv2-vs-FuxiCTR and sparse-MoE side-by-sides, on the same device.
[ "$PEERS" = "0" ] || "$PY" -m rankmixer bench speed --device "$DEVICE" --model "${MODELS%% *}" --batch-sizes "${BATCHES%%,*}" \
  --train-batch "${BATCHES%%,*}" --precision bf16 "${peak_args[@]}" --rounds "$ROUNDS" --no-baseline --no-ablations \
  --json "$OUT/peers.json" 2>&1 | tee "$OUT/peers.log"
echo "wrote $OUT"
