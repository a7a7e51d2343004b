#!/usr/bin/env bash
# The LVIS or open-vocabulary COCO recipe at its real sizes (R50-FPN, LSJ 1024, M = 300, the GPU
# configs' detections per image, 1,203 or 65 classes) on a mini-LVIS or mini-COCO with a random
# ViT-B/32-shaped CLIP: one tools/run_recipe.py per ViLD mode (the classifiers, proposal network and
# region cache are built once and reused), then train_net.py --eval-only. Wall time and peak RSS of
# each command go to $WORK/times.txt.
#
#   bash benchmarks/rehearse_recipe.sh [WORK] [MODES...]
#   WORK=output/<dataset>_rehearsal; MODES default: text image vild ensemble (COCO: text vild ensemble)
# Environment: DATASET (lvis or coco, default lvis), NUM_TRAIN / NUM_VAL (world size, default 6 / 2),
# TEMPLATES (a prompt-template file; default: the package's full set), OVERLAY (default
# configs/overlays/CPU-rehearsal.yaml; on a GPU give an overlay with MODEL.DEVICE cuda), NUM_GPUS
# (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${DATASET:-lvis}
case $DATASET in
  lvis) CONFIGS=configs/LVIS-OV; DEFAULT_MODES="text image vild ensemble" ;;
  coco) CONFIGS=configs/COCO-OV; DEFAULT_MODES="text vild ensemble" ;;
  *) echo "DATASET must be lvis or coco, got '$DATASET'" >&2; exit 2 ;;
esac
WORK=${1:-output/${DATASET}_rehearsal}
shift || true
MODES=${*:-$DEFAULT_MODES}
PY=${PY:-.venv/bin/python}
OVERLAY=${OVERLAY:-configs/overlays/CPU-rehearsal.yaml}
export DETECTRON2_DATASETS=$WORK/data
mkdir -p "$WORK"
timed() {  # timed LABEL CMD...: run, append "LABEL wall_s peak_rss_kb" to times.txt
  local label=$1; shift
  /usr/bin/time -f "$label %e %M" -a -o "$WORK/times.txt" "$@"
}
timed "prepare_mini_$DATASET" "$PY" "datasets/prepare_mini_$DATASET.py" --output "$DETECTRON2_DATASETS" \
  --num-train "${NUM_TRAIN:-6}" --num-val "${NUM_VAL:-2}" --clip "$DETECTRON2_DATASETS/clip_vit_b32.pt"
extra=()
if [ -n "${TEMPLATES:-}" ]; then extra+=(MODEL.VILD.PROMPT_TEMPLATES "$TEMPLATES"); fi
declare -A CONFIG=([text]=vild_text [image]=vild_image [vild]=vild [ensemble]=vild_ensemble)
for mode in $MODES; do
  config="$CONFIGS/${CONFIG[$mode]}_R50_FPN.yaml"
  if [ ! -f "$config" ]; then echo "no $config: modes of $DATASET are $DEFAULT_MODES" >&2; exit 2; fi
  timed "recipe_$mode" "$PY" tools/run_recipe.py --config-file "$config" \
    --proposal-config "$CONFIGS/rpn_R50_FPN.yaml" --overlay "$OVERLAY" --output "$WORK/recipe" \
    --num-gpus "${NUM_GPUS:-1}" MODEL.VILD.CLIP_MODEL "$DETECTRON2_DATASETS/clip_vit_b32.pt" "${extra[@]}" \
    > "$WORK/recipe_$mode.log" 2>&1
  vild=$(ls -td "$WORK"/recipe/vild_* | head -1)
  timed "eval_only_$mode" "$PY" train_net.py --eval-only --config-file "$vild/config.yaml" \
    MODEL.WEIGHTS "$vild/model_final.pth" OUTPUT_DIR "$WORK/eval_$mode" > "$WORK/eval_$mode.log" 2>&1
  grep -A4 "ViLD evaluation summary" "$WORK/eval_$mode.log" | tail -4
done
cat "$WORK/times.txt"
