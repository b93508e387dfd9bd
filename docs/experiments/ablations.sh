#!/usr/bin/env bash
# The ablations of docs/experiments.md, in the toy world, with the project's own train.py and evaluate.py:
#   bash docs/experiments/ablations.sh [RUNS_DIR] [STEP ...]       (default: runs/ablations, every step)
# Steps, in order: v2 v3 v4-unet v4 evaluate. Each training resumes where it stopped; its wall time
# (this invocation's) is appended to RUNS_DIR/times.txt and its log.jsonl keeps samples/s.
#   v2       ControlNet reading the 4 noisy latents alone (+ the paint-mask control image)
#   v3       ControlNet reading SI2's 9 channels, control image = the masked object image
#   v4-unet  a text-to-image toy U-Net (4 input channels), trained as the shipped inpainting one
#   v4       ControlNet on that U-Net (4 channels + the masked object image): the SD2+ControlNet baseline
#   evaluate every row on the same 50 held-out scenes x 2 samples, the same noise (seed 0)
# The shipped design (row 1) is weights/toy, made by weights/toy/make_weights.sh.
# On a shared machine: PYTHON="nice -n 19 env OMP_NUM_THREADS=1 python" bash docs/experiments/ablations.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/ablations}
shift || true
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(v2 v3 v4-unet v4 evaluate)
PYTHON=${PYTHON:-python}
TOY=weights/toy
mkdir -p "$RUNS"

train() {  # NAME TRAIN_ARGS...: one run of train.py on the toy data, seed 0, 3000 steps, EMA 0.999
    local name=$1 start
    shift
    start=$(date +%s)
    $PYTHON train.py "$@" --data toy --steps 3000 --batch-size 16 --ema-decay 0.999 --checkpoint-every 250 \
        --out-dir "$RUNS/$name" --resume >>"$RUNS/$name.log" 2>&1
    echo "$name $(($(date +%s) - start)) s (wall, this invocation)" >>"$RUNS/times.txt"
}

# The shipped ControlNet's recipe (make_weights.sh): the frozen VAE, U-Net and text encoder of weights/toy,
# the ControlNet starting as a copy of the U-Net's encoder.
CONTROLNET=(--stage controlnet --learning-rate 2e-4 --warmup-steps 50)
evaluate() {  # NAME EVALUATE_ARGS...: one row, 50 held-out scenes x 2 samples
    local name=$1
    shift
    $PYTHON evaluate.py --generate --toy 50 --num-images 2 --out "$RUNS/eval/$name" "$@" >"$RUNS/eval/$name.log" 2>&1
}

for step in "${STEPS[@]}"; do
    case $step in
    v2) train v2-latent-controlnet "${CONTROLNET[@]}" --init $TOY/vae $TOY/unet $TOY/text_encoder \
        --controlnet-in-channels 4 ;;
    v3) train v3-object-control "${CONTROLNET[@]}" --init $TOY/vae $TOY/unet $TOY/text_encoder \
        --control-image masked_object ;;
    v4-unet) train v4-t2i-unet --stage unet --init $TOY/vae --learning-rate 5e-4 --warmup-steps 100 \
        --unet-in-channels 4 ;;
    v4) train v4-t2i-controlnet "${CONTROLNET[@]}" --init $TOY/vae "$RUNS/v4-t2i-unet/weights" \
        --unet-in-channels 4 --control-image masked_object ;;
    evaluate) echo "evaluation: see below" ;;
    *) echo "unknown step $step (v2 v3 v4-unet v4 evaluate)" >&2; exit 2 ;;
    esac
done
