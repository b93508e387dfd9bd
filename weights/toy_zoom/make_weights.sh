#!/usr/bin/env bash
# The toy model that has also seen close-ups: weights/toy fine-tuned on a mixture of whole 64 px scenes
# (--data toy) and 64 px windows of scenes drawn at 2x and 4x (--data toyzoom), what --hires's tiles see of
# a photo larger than the working size. Stable Diffusion met close-ups in its photos; the toy model, trained
# on whole scenes only, takes every tile for a whole scene (docs/toy_world.md, "Close-ups for --hires").
#   bash weights/toy_zoom/make_weights.sh [RUNS_DIR]        (default runs/toy_zoom; about 2 hours on 2 cores)
# Each stage starts from the shipped toy weights or the previous stage's export, as weights/toy/make_weights.sh;
# EMA 0.995, so that after the run the averaged weights hold none of the starting ones (0.999 kept 1/5 of them).
set -euo pipefail
cd "$(dirname "$0")/../.."
# The shipped VAE's two runs drew their toyzoom windows before the rule "at most half object" was added
# (data/synthetic.py: WINDOW_TRIES); a rerun draws other windows there, so its VAE will differ a little.
# The U-Net ran 2500 steps, then was resumed to 4000 (the same as one run: resuming is exact). The fifth stage
# (session 10) trains the U-Net and text encoder 3000 steps more, 3 close-ups to 1 scene, at half the learning
# rate, after the ControlNet. Session 13 added the last two: the decoder with a texture term, and the ControlNet
# fitted again to the fifth stage's U-Net (docs/toy_world.md).
RUNS=${1:-runs/toy_zoom}
PYTHON=${PYTHON:-python}

$PYTHON train.py --stage vae --init weights/toy/vae --data toy toyzoom --steps 400 --batch-size 16 \
    --learning-rate 2e-4 --warmup-steps 20 --checkpoint-every 100 --out-dir "$RUNS/vae" --resume
$PYTHON train.py --stage vae --init "$RUNS/vae/weights" --data toy toyzoom --data-weights 1 3 --steps 500 \
    --batch-size 16 --learning-rate 2e-4 --warmup-steps 20 --checkpoint-every 100 --out-dir "$RUNS/vae2" --resume
$PYTHON train.py --stage unet --init weights/toy "$RUNS/vae2/weights" --data toy toyzoom --steps 4000 --batch-size 16 \
    --learning-rate 2e-4 --warmup-steps 50 --ema-decay 0.995 --checkpoint-every 250 --out-dir "$RUNS/unet" --resume
$PYTHON train.py --stage controlnet --init weights/toy/controlnet "$RUNS/vae2/weights" "$RUNS/unet/weights" \
    --data toy toyzoom --steps 1500 --batch-size 16 --learning-rate 1e-4 --warmup-steps 50 --ema-decay 0.995 \
    --checkpoint-every 250 --out-dir "$RUNS/controlnet" --resume
$PYTHON train.py --stage unet --init "$RUNS/vae2/weights" "$RUNS/unet/weights" --data toy toyzoom --data-weights 1 3 \
    --steps 3000 --batch-size 16 --learning-rate 1e-4 --warmup-steps 50 --ema-decay 0.995 --checkpoint-every 500 \
    --out-dir "$RUNS/unet2" --resume
# Session 13: the VAE's decoder alone (the encoder, and so every latent the U-Net and ControlNet learnt, kept)
# with a texture term, which gives back the grains L1 + L2 blurred (docs/toy_world.md, "Why the stars stay out").
$PYTHON train.py --stage decoder --init "$RUNS/vae2/weights" --data toy toyzoom --data-weights 1 3 --texture-weight 1 \
    --steps 800 --batch-size 16 --learning-rate 1e-4 --warmup-steps 20 --ema-decay 0.99 --checkpoint-every 200 \
    --out-dir "$RUNS/decoder" --resume
# ... and the ControlNet fitted again, to the U-Net of the fifth stage that it steers (it was fitted to the
# third stage's), from where it was: the same settings as its first run.
$PYTHON train.py --stage controlnet --init "$RUNS/controlnet/weights" "$RUNS/decoder/weights" "$RUNS/unet2/weights" \
    --data toy toyzoom --steps 1500 --batch-size 16 --learning-rate 1e-4 --warmup-steps 50 --ema-decay 0.995 \
    --checkpoint-every 250 --out-dir "$RUNS/controlnet2" --resume
for component in vae unet text_encoder controlnet; do
    source=$(ls -d "$RUNS"/unet2/weights/$component "$RUNS"/decoder/weights/$component \
             "$RUNS"/controlnet2/weights/$component 2>/dev/null | tail -1)
    rm -rf "weights/toy_zoom/$component"
    cp -r "$source" "weights/toy_zoom/$component"
done
echo "wrote weights/toy_zoom/{vae,unet,text_encoder,controlnet}"
