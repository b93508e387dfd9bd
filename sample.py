"""Paint new backgrounds around an object without growing it.

  python sample.py                                  # the shipped toy model on its bundled example
  python sample.py --image bottle.jpg --mask bottle_mask.png --prompt "a bottle on a marble table" \\
      --checkpoint weights/stable-diffusion-2-inpainting --controlnet weights/photo-background-generation/controlnet
  python sample.py --image cutout.png --prompt "..." ...   # RGBA: the alpha channel is the mask
  python sample.py --image photos/ --mask masks/ --prompt "..." ...   # a folder: masks named like the photos
  python sample.py --inputs manifest.jsonl ...      # per-photo mask and prompt (evaluate.py's format)
  python sample.py ... --no-controlnet              # the SI2 baseline (equal to --control-scale 0)

The mask is white where the object is. Photos of any size are painted at the model's working size
(--resolution; 512 px for SD2) and come back at their own size with their own object pixels; --raw
keeps the model's output at the working size. Writes <name>_<k>.png and <name>_grid.png (input |
mask | results) per input to --out; inputs whose outputs are there already are skipped (--overwrite
to redo them). Exit code 0: all done; 1: some inputs failed (listed); 2: nothing was done.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from salient_outpaint.loading import REPOSITORY, TOY_EXAMPLE, TOY_WEIGHTS

MAX_SEED = 2**63 - 1


def parse_args(argv=None) -> argparse.Namespace:
    from salient_outpaint.config import PRESETS
    from salient_outpaint.device import default_device
    from salient_outpaint.sampling import SAMPLERS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    inputs = parser.add_argument_group("inputs (default: the toy example)")
    inputs.add_argument("--image", help="an object photo or a folder of them (RGBA: the alpha channel is the mask; "
                                        "RGB on a plain backdrop: the backdrop is found)")
    inputs.add_argument("--mask", help="object mask, white = object; a folder of masks named like the photos "
                                       "when --image is a folder (default: the alpha channel or backdrop)")
    inputs.add_argument("--prompt", help="what the new background should show")
    inputs.add_argument("--inputs", metavar="MANIFEST", help="JSONL, one {id, image, mask, prompt} per line, "
                                                             "instead of --image/--mask/--prompt")
    parser.add_argument("--negative-prompt", default="", help="what to steer away from (default: none)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default: 20)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default: 7.5)")
    parser.add_argument("--control-scale", type=float, default=1.0,
                        help="ControlNet strength; 0 gives plain SI2 (default: 1.0)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="dpm++2m", help="(default: dpm++2m)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise (default: 0, deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="every input starts from this seed (default: 0)")
    parser.add_argument("--num-images", type=int, default=4, help="images per input (default: 4)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images generated at once; lower it if memory runs out (default: 4)")
    parser.add_argument("--resolution", type=int, help="working size: sampled at about this squared pixel area, "
                                                       "aspect ratio kept (default: the model's, 512 for SD2)")
    parser.add_argument("--raw", action="store_true", help="write the model's output at the working size, "
                                                           "without resizing and pasting the object back")
    parser.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    parser.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="architecture (default: toy without --checkpoint, else sd2-inpaint)")
    parser.add_argument("--checkpoint", help="SI2 weights: an ldm file or a diffusers folder "
                                             f"(default: the toy model in {TOY_WEIGHTS.relative_to(REPOSITORY)})")
    parser.add_argument("--controlnet", help="ControlNet weights in any layout (default: the one in --checkpoint)")
    parser.add_argument("--no-controlnet", action="store_true", help="sample with SI2 alone (the baseline)")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    return parser.parse_args(argv)


def check_args(args) -> None:
    """Every flag in range, before anything is loaded."""
    from salient_outpaint.config import PRESETS
    from salient_outpaint.device import check_device

    for flag, value in (("--num-images", args.num_images), ("--batch-size", args.batch_size),
                        ("--steps", args.steps)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    most_steps = min(config.schedule.num_train_timesteps for config in PRESETS.values()) - 1  # see check_steps
    if args.steps > most_steps:
        raise ValueError(f"--steps must be at most {most_steps}, got {args.steps}")
    for flag, value in (("--guidance", args.guidance), ("--control-scale", args.control_scale),
                        ("--eta", args.eta)):
        if value < 0:
            raise ValueError(f"{flag} must not be negative, got {value}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, 2**63 - 1], got {args.seed}")
    if args.resolution is not None and (args.resolution < 8 or args.resolution % 8):
        raise ValueError(f"--resolution must be a positive multiple of 8, got {args.resolution}")
    if args.inputs and (args.image or args.mask or args.prompt):
        raise ValueError("--inputs gives every image, mask and prompt; leave out --image, --mask and --prompt")
    if args.image and args.prompt is None:
        raise ValueError("give --prompt: what the new background should show")
    check_device(args.device)


def list_jobs(args):
    from salient_outpaint.batch import jobs_from_images, jobs_from_manifest

    if args.inputs:
        return jobs_from_manifest(Path(args.inputs))
    if args.image:
        return jobs_from_images(Path(args.image), Path(args.mask) if args.mask else None, args.prompt)
    prompt = args.prompt if args.prompt is not None else (TOY_EXAMPLE / "prompt.txt").read_text().strip()
    return jobs_from_images(TOY_EXAMPLE / "object.png", Path(args.mask or TOY_EXAMPLE / "mask.png"), prompt)


def generate(args) -> int:
    from salient_outpaint.batch import prepare_output_folder, run_batch
    from salient_outpaint.checkpoints import CheckpointError
    from salient_outpaint.loading import load_models
    from salient_outpaint.pipeline import OutpaintPipeline, SamplingOptions

    try:
        check_args(args)
        jobs = list_jobs(args)
        out = prepare_output_folder(Path(args.out))  # before the models: a wrong --out costs nothing
        models = load_models(args.checkpoint, args.controlnet, args.preset, with_controlnet=not args.no_controlnet)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = SamplingOptions(steps=args.steps, guidance=args.guidance, sampler=args.sampler, eta=args.eta,
                              control_scale=0.0 if args.no_controlnet else args.control_scale)
    summary = run_batch(OutpaintPipeline(models, args.device), jobs, out, args.num_images, args.batch_size, options,
                        args.negative_prompt, args.seed, args.resolution, args.raw, args.overwrite)
    print(f"wrote {summary.images} images for {len(summary.done)} of {len(jobs)} inputs to {out}"
          + (f"; {len(summary.skipped)} already done, skipped (--overwrite redoes them)" if summary.skipped else ""))
    if summary.failed:
        names = ", ".join(name for name, _ in summary.failed)
        print(f"error: {len(summary.failed)} of {len(jobs)} inputs failed (see above): {names}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    from tqdm import tqdm

    args = parse_args(argv)
    with warnings.catch_warnings():  # warnings (a truncated prompt) as one line each
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: tqdm.write(f"warning: {message}", file=sys.stderr)
        return generate(args)


if __name__ == "__main__":
    sys.exit(main())
