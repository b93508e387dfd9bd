"""Train the ControlNet on a frozen SD2-inpainting (the paper), or the toy world's own networks.

  # the paper: ControlNet on salient-object data, SI2 frozen
  python train.py --preset sd2-inpaint --init weights/stable-diffusion-2-inpainting \\
      --data salient:data/DUTS-TR:data/duts_captions.jsonl coco:coco/train2017:coco/captions.json:coco/masks \\
      --resolution 512 --batch-size 4 --precision bf16 --frozen-dtype bf16 --gradient-checkpointing
  # the same on N GPUs (--batch-size is per process)
  torchrun --nproc_per_node=N train.py ...
  # the same on 2 machines x 8 GPUs (docs/training.md has a SLURM script)
  torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --rdzv_id=RUN train.py ...
  # continue a run where it stopped (the newest readable checkpoint; only --steps and the other
  # settings listed in training/config.py:CHANGEABLE_ON_RESUME may differ from the first command)
  python train.py ... --resume
  # stream tar shards (python -m salient_outpaint.data.shards pack --help), decoded by 8 workers
  python train.py ... --data "shards:data/shards/shard-{000000..000173}.tar" --num-workers 8
  # encode the data once (2 epochs of augmentation) with the frozen VAE and text encoder,
  # then train from those latents: the same losses, without the encoders in every step
  python train.py ... --latents runs/latents --precompute-latents 2
  python train.py ... --latents runs/latents
  # time one training step
  python train.py --preset toy --benchmark 5

Every flag below is a field of salient_outpaint/training/config.py:TrainConfig.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from salient_outpaint.config import CONTROL_IMAGES, PRESETS
from salient_outpaint.inputs import flag
from salient_outpaint.outputs import check_output_folder, ends_in_one_line
from salient_outpaint.training.config import STAGES, TrainConfig
from salient_outpaint.training.loop import benchmark, precompute, train
from salient_outpaint.training.objective import TEXTURE_WINDOW

HELP = {
    "stage": f"what to train: {', '.join(STAGES)} (controlnet is the paper; vae and unet build the toy world; "
             "decoder fine-tunes the VAE's decoder alone, leaving the encoder and so the latents unchanged)",
    "preset": f"architecture: {', '.join(PRESETS)}",
    "init": "checkpoints to load first (files or folders in any layout the loader reads); "
            "a ControlNet not among them starts as a copy of the loaded U-Net",
    "unet_in_channels": "4: a text-to-image U-Net (no mask or masked-image channels; the SD2+ControlNet baseline); "
                        "0: the preset's",
    "controlnet_in_channels": "4: the ControlNet reads the noisy latents alone; 0: all the U-Net's input channels",
    "control_image": f"what the ControlNet's control image shows: {', '.join(CONTROL_IMAGES)} (default: the "
                     "preset's, paint_mask)",
    "data": "dataset specs: toy[:N], toyzoom[:N], salient:ROOT[:CAPTIONS], coco:IMAGES:CAPTIONS_JSON:MASKS, shards:PATTERN",
    "data_weights": "mixture weights, one per --data spec",
    "latents": "folder of precomputed latents and text embeddings to train from (controlnet stage; made with "
               "--precompute-latents; must match --preset, --resolution, --data, --seed, --frozen-dtype, --init)",
    "out_dir": "where checkpoints, exported weights (out_dir/weights) and log.jsonl go; one run at a time "
               "(out_dir/run.lock)",
    "resolution": "training image size (square crops)",
    "steps": "optimizer steps in total (may be changed on --resume: run longer, or stop sooner)",
    "batch_size": "samples per process and micro-step",
    "grad_accumulation": "micro-steps per optimizer step",
    "learning_rate": "AdamW learning rate after warmup",
    "warmup_steps": "linear warmup steps",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping norm",
    "ema_decay": "EMA decay of the trained weights (0: off); exported weights are the EMA",
    "objective": "epsilon or v_prediction (default: the preset's)",
    "precision": "autocast dtype of the forward pass: fp32, bf16, fp16",
    "frozen_dtype": "dtype the frozen networks are kept in: fp32, bf16, fp16 (default '': fp16 on a GPU, fp32 on "
                    "a CPU, where half precision is slow)",
    "gradient_checkpointing": "recompute activations in the backward pass to save memory",
    "compile": "torch.compile the networks (the first steps are slower while it compiles)",
    "empty_prompt_probability": "fraction of captions replaced by '' (for classifier-free guidance)",
    "kl_weight": "KL weight of the VAE stage",
    "texture_weight": f"vae and decoder stages: weight of a texture term that asks each {TEXTURE_WINDOW} px "
                      "window of the reconstruction for the image's gradient energy, not its exact pixels; an L1/L2 "
                      "loss alone blurs texture whose grains the latents do not pin down (0: off)",
    "seed": "seed of the initial weights, data order and every per-sample random draw",
    "log_every": "steps between log lines",
    "checkpoint_every": "steps between checkpoints",
    "keep_checkpoints": "how many of the newest training checkpoints to keep",
    "validate_every": "steps between validation image grids (0: none)",
    "validation_image": "your own validation images (repeatable; default: the first 4 training items)",
    "validation_mask": "the object mask of each --validation-image (white = object)",
    "validation_prompt": "the prompt of each --validation-image (default: empty)",
    "log_to": "'tensorboard': also write TensorBoard events to out_dir/tensorboard (pip install "
              "'salient-outpaint[tensorboard]')",
    "num_workers": "DataLoader worker processes decoding batches ahead of the training step "
                   "(0: on the training thread; 4-8 per GPU for JPEG data)",
    "skip_data_check": "do not open every image and mask before step 0",
    "resume": "continue from the newest readable checkpoint in out_dir, if there is one",
}


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(TrainConfig):
        if field.type == "bool":
            parser.add_argument(flag(field.name), action="store_true", help=HELP[field.name])
        elif field.type.startswith("tuple"):  # "--data a b" or "--data a --data b"
            item_type = float if "float" in field.type else str
            parser.add_argument(flag(field.name), nargs="+", action="extend", type=item_type, help=HELP[field.name])
        else:
            kind = {"int": int, "float": float, "str": str}[field.type]
            parser.add_argument(flag(field.name), type=kind, default=field.default,
                                help=f"{HELP[field.name]} (default: {field.default})")
    parser.add_argument("--benchmark", type=int, default=0, metavar="STEPS",
                        help="time STEPS training steps (after one warm-up step) and print samples/s and peak "
                             "memory; writes nothing")
    parser.add_argument("--precompute-latents", type=int, default=0, metavar="EPOCHS",
                        help="instead of training, encode EPOCHS epochs of the data (each with its own "
                             "augmentation) into the --latents folder; rerun to finish an interrupted run")
    args = vars(parser.parse_args(argv))
    modes = {"benchmark": args.pop("benchmark"), "precompute_latents": args.pop("precompute_latents")}
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    values = {key: defaults[key] if value is None else tuple(value) if isinstance(value, list) else value
              for key, value in args.items()}
    return TrainConfig(**values), modes


def main(argv: list[str] | None = None) -> int:
    return ends_in_one_line(lambda: run(argv))


def run(argv: list[str] | None) -> int:
    try:
        config, modes = parse_args(argv)
        if modes["benchmark"]:
            print(json.dumps(benchmark(config, steps=modes["benchmark"])))
            return 0
        if modes["precompute_latents"]:
            if config.latents:  # without it, precompute says what is missing
                check_output_folder(config.latents, "--latents")
            summary = precompute(config, epochs=modes["precompute_latents"])
            if summary:
                print(json.dumps(summary))
            return 0
        check_output_folder(config.out_dir, "--out-dir")
        record = train(config)
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if record:
        print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
