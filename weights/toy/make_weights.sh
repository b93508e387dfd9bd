#!/usr/bin/env bash
# Reproduces the shipped toy-world weights with the project's own train.py, on CPU:
#   bash weights/toy/make_weights.sh [RUNS_DIR]        (default runs/toy)
# Three stages, each reading the previous ones' exported weights (see docs/toy_world.md):
#   1. the toy VAE;  2. the 9-channel inpainting U-Net and text encoder, trained like SD inpainting;
#   3. the ControlNet on exact object masks, everything else frozen (the paper's method).
# Then the four networks are copied into weights/toy/ as one diffusers-layout folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/toy}
PYTHON=${PYTHON:-python}

$PYTHON train.py --stage vae --data toy --steps 800 --batch-size 16 --learning-rate 5e-4 --warmup-steps 50 \
    --checkpoint-every 200 --out-dir "$RUNS/vae" --resume
$PYTHON train.py --stage unet --init "$RUNS/vae/weights" --data toy --steps 3000 --batch-size 16 \
    --learning-rate 5e-4 --warmup-steps 100 --ema-decay 0.999 --checkpoint-every 250 --out-dir "$RUNS/unet" --resume
$PYTHON train.py --stage controlnet --init "$RUNS/vae/weights" "$RUNS/unet/weights" --data toy --steps 3000 \
    --batch-size 16 --learning-rate 2e-4 --warmup-steps 50 --ema-decay 0.999 --checkpoint-every 250 \
    --out-dir "$RUNS/controlnet" --resume
for component in vae unet text_encoder controlnet; do
    source=$(ls -d "$RUNS"/*/weights/$component)
    rm -rf "weights/toy/$component"
    cp -r "$source" "weights/toy/$component"
done
echo "wrote weights/toy/{vae,unet,text_encoder,controlnet}"
