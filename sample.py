"""Paint new backgrounds around an object without growing it.

  python sample.py                                  # the shipped toy model on its bundled example
  python sample.py --image bottle.png --mask bottle_mask.png --prompt "a bottle on a marble table" \\
      --checkpoint weights/stable-diffusion-2-inpainting --controlnet weights/photo-background-generation/controlnet
  python sample.py --image cutout.png --prompt "..." ...   # RGBA: the alpha channel is the mask
  python sample.py ... --no-controlnet              # the SI2 baseline (equal to --control-scale 0)

The mask is white where the object is. Writes each image and a grid (input | mask | outputs) to --out.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from salient_outpaint.loading import REPOSITORY, TOY_EXAMPLE, TOY_WEIGHTS


def parse_args(argv=None) -> argparse.Namespace:
    from salient_outpaint.config import PRESETS
    from salient_outpaint.precision import add_dtype_argument
    from salient_outpaint.sampling import SAMPLERS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="the object photo (RGB; RGBA uses alpha as the mask); "
                                        "default: the toy example")
    parser.add_argument("--mask", help="object mask, white = object (default: the image's alpha channel, or the "
                                       "toy example's mask)")
    parser.add_argument("--prompt", help="what the new background should show (default: the toy example's)")
    parser.add_argument("--negative-prompt", default="", help="what to steer away from (default: none)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default: 20)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default: 7.5)")
    parser.add_argument("--control-scale", type=float, default=1.0,
                        help="ControlNet strength; 0 gives plain SI2 (default: 1.0)")
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default="dpm++2m", help="(default: dpm++2m)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise (default: 0, deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument("--num-images", type=int, default=4, help="images to generate (default: 4)")
    parser.add_argument("--out", default="outputs", help="output folder (default: outputs)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="architecture (default: toy without --checkpoint, else sd2-inpaint)")
    parser.add_argument("--checkpoint", help="SI2 weights: an ldm file or a diffusers folder "
                                             f"(default: the toy model in {TOY_WEIGHTS.relative_to(REPOSITORY)})")
    parser.add_argument("--controlnet", help="ControlNet weights in any layout (default: the one in --checkpoint)")
    parser.add_argument("--no-controlnet", action="store_true", help="sample with SI2 alone (the baseline)")
    parser.add_argument("--paste-back", action="store_true", help="paste the original object pixels back")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_dtype_argument(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (pays off over many "
                                                               "steps; the first image waits for the compilation)")
    return parser.parse_args(argv)


def load_inputs(args):
    from salient_outpaint.data.images import load_image, load_mask, load_rgba_as_image_and_mask

    image_path = Path(args.image) if args.image else TOY_EXAMPLE / "object.png"
    mask_path = args.mask or (None if args.image else TOY_EXAMPLE / "mask.png")
    prompt = args.prompt if args.prompt is not None else (
        None if args.image else (TOY_EXAMPLE / "prompt.txt").read_text().strip())
    if prompt is None:
        raise ValueError("give --prompt: what the new background should show")
    if mask_path is None:
        image, mask = load_rgba_as_image_and_mask(image_path)
    else:
        image, mask = load_image(image_path), load_mask(mask_path)
    return image, mask, prompt


def main(argv=None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings():  # warnings (binarised mask, truncated prompt) as one line each
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: print(f"warning: {message}", file=sys.stderr)
        return generate(args)


def generate(args) -> int:
    from salient_outpaint.checkpoints import CheckpointError
    from salient_outpaint.data.images import make_grid, mask_as_image, save_image
    from salient_outpaint.loading import load_models
    from salient_outpaint.modules.models import compile_models
    from salient_outpaint.pipeline import OutpaintPipeline, SamplingOptions

    try:
        image, mask, prompt = load_inputs(args)
        models = load_models(args.checkpoint, args.controlnet, args.preset, with_controlnet=not args.no_controlnet,
                             dtype=args.dtype, device=args.device)
        if args.compile:
            compile_models(models)
        pipeline = OutpaintPipeline(models, args.device)
        options = SamplingOptions(steps=args.steps, guidance=args.guidance, sampler=args.sampler, eta=args.eta,
                                  control_scale=0.0 if args.no_controlnet else args.control_scale,
                                  paste_back=args.paste_back)
        generator = torch.Generator().manual_seed(args.seed)
        images = pipeline(image, mask, prompt, args.negative_prompt, args.num_images, options, generator,
                          progress=True)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for index, generated in enumerate(images):
        save_image(generated, out / f"image_{index:02d}.png")
    save_image(make_grid([image, mask_as_image(mask), *images], columns=2 + len(images)), out / "grid.png")
    print(f"wrote {len(images)} images and grid.png to {out} (prompt: {prompt!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
