#!/usr/bin/env bash
# The ablations of docs/experiments.md, in the toy world, with the project's own train.py and evaluate.py:
#   bash docs/experiments/ablations.sh [RUNS_DIR] [STEP ...]       (default: runs/ablations, every step)
# Steps, in order: v2 v3 v4-unet v4 (trainings) and eval-shipped eval-scales eval-windows eval-v2 eval-v3
# eval-v4 (evaluations), then table. Each training resumes where it stopped; its wall time (this
# invocation's) is appended to RUNS_DIR/times.txt and its log.jsonl keeps samples/s.
#   v2       ControlNet reading the 4 noisy latents alone (+ the paint-mask control image)
#   v3       ControlNet reading SI2's 9 channels, control image = the masked object image
#   v4-unet  a text-to-image toy U-Net (4 input channels), trained as the shipped inpainting one
#   v4       ControlNet on that U-Net (4 channels + the masked object image): the SD2+ControlNet baseline
#   eval-*   evaluate.py on the same 50 held-out scenes x 2 samples, the same noise (seed 0), DPM-Solver++
#            20 steps, guidance 5; RUNS_DIR/eval/<row>/report.json
#   table    docs/experiments/summarise.py: the table of docs/experiments.md and the grids
# The shipped design (row 1) is weights/toy, made by weights/toy/make_weights.sh.
# On a shared machine: PYTHON="nice -n 19 env OMP_NUM_THREADS=1 python" bash docs/experiments/ablations.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/ablations}
shift || true
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || STEPS=(v2 v3 v4-unet v4 eval-shipped eval-scales eval-windows eval-v2 eval-v3 eval-v4 table)
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
evaluate() {  # ROW EVALUATE_ARGS...: one row, 50 held-out scenes x 2 samples
    local row=$1
    shift
    mkdir -p "$RUNS/eval"
    $PYTHON evaluate.py --generate --toy 50 --num-images 2 --out "$RUNS/eval/$row" "$@" >"$RUNS/eval/$row.log" 2>&1
}

trained_steps() {  # ROW RUN...: the steps of the weights a row evaluates (exported every 250), for the table
    local row=$1 run last
    shift
    mkdir -p "$RUNS/eval/$row"
    for run in "$@"; do
        last=$(tail -n 1 "$RUNS/$run/log.jsonl" | sed 's/.*"step": \([0-9]*\).*/\1/')
        echo "$run $((last / 250 * 250))"
    done >"$RUNS/eval/$row/trained_steps.txt"
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
    # rows 1 and 5 at scales 0 and 1: the shipped ControlNet, and the toy U-Net alone
    eval-shipped) evaluate v1-shipped ;;
    eval-scales) for scale in 0.25 0.5 1.5; do
        evaluate "v5-scale-$scale" --methods controlnet --control-scale $scale
    done ;;
    eval-windows) for window in "0 0.5" "0.5 1" "0 0.25"; do
        set -- $window
        evaluate "v5-window-$1-$2" --methods controlnet --control-start $1 --control-end $2
    done ;;
    eval-v2) trained_steps v2-latent-controlnet v2-latent-controlnet
        evaluate v2-latent-controlnet --methods controlnet --controlnet "$RUNS/v2-latent-controlnet/weights" ;;
    eval-v3) trained_steps v3-object-control v3-object-control
        evaluate v3-object-control --methods controlnet --controlnet "$RUNS/v3-object-control/weights" ;;
    eval-v4)  # the t2i model as one folder: the shipped VAE, the trained U-Net, text encoder and ControlNet;
        # no-controlnet is the t2i U-Net alone (the object pasted back)
        trained_steps v4-t2i v4-t2i-unet v4-t2i-controlnet
        rm -rf "$RUNS/v4-model" && mkdir -p "$RUNS/v4-model"
        cp -r $TOY/vae "$RUNS/v4-t2i-unet/weights/unet" "$RUNS/v4-t2i-unet/weights/text_encoder" \
            "$RUNS/v4-t2i-controlnet/weights/controlnet" "$RUNS/v4-model/"
        evaluate v4-t2i --checkpoint "$RUNS/v4-model" --preset toy ;;
    table) $PYTHON docs/experiments/summarise.py "$RUNS" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
