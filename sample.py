"""Paint new backgrounds around an object without growing it.

  python sample.py                                  # the shipped toy model on its bundled example
  python sample.py --image bottle.jpg --mask bottle_mask.png --prompt "a bottle on a marble table" \\
      --checkpoint weights/stable-diffusion-2-inpainting --controlnet weights/photo-background-generation/controlnet
  python sample.py --image cutout.png --prompt "..." ...   # RGBA: the alpha channel is the mask
  python sample.py --image photos/ --mask masks/ --prompt "..." ...   # a folder: masks named like the photos
  python sample.py --inputs manifest.jsonl ...      # per-photo mask and prompt (evaluate.py's format)
  python sample.py --image photo.jpg --prompt "..." --mask-weights weights/ckpt_base.pth --preset-sampling authors
      # a bare photo: InSPyReNet finds the object (pip install -e ".[mask]"), sampled as in the authors' notebook
  python sample.py --image photo.jpg --prompt "..." --segmenter sam --mask-weights sam_vit_h_4b8939.pth --point 410,300
  python sample.py ... --no-controlnet              # the SI2 baseline (equal to --control-scale 0)

The mask is white where the object is: --mask, else the image's alpha channel, else its plain backdrop,
else what --segmenter finds (soft, as the authors use it; --mask-threshold/--mask-grow make it binary);
a mask the segmenter made is written as <name>_mask.png. Photos of any size are painted at the model's working size
(--resolution; 512 px for SD2) and come back at their own size with their own object pixels; --raw
keeps the model's output at the working size. Writes <name>_<k>.png and <name>_grid.png (input |
mask | results) per input to --out, and OUT/settings.json, the options and weights they were made with;
inputs whose outputs are there already, made alike, are skipped (--overwrite to redo them). Exit code
0: all done; 1: some inputs failed (listed); 2: nothing was done.

  torchrun --nproc_per_node 4 sample.py --image photos/ --mask masks/ --prompt "..." --device cuda ...
      # the inputs shared by 4 processes, one GPU each (LOCAL_RANK); one summary (docs/sampling.md)
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from salient_outpaint import distributed
from salient_outpaint.batch import (input_files, jobs_from_images, jobs_from_manifest, plan_batch, planned_outputs,
                                    run_batch)
from salient_outpaint.checkpoints import CheckpointError
from salient_outpaint.config import PRESETS
from salient_outpaint.data.images import DEFAULT_MAX_PIXELS, check_max_pixels
from salient_outpaint.device import check_device, default_device
from salient_outpaint.hires import HiresOptions, add_hires_arguments, hires_options
from salient_outpaint.inputs import MAX_RESOLUTION, MAX_SEED
from salient_outpaint.loading import REPOSITORY, TOY_EXAMPLE, TOY_WEIGHTS, load_models
from salient_outpaint.modules.models import compile_models
from salient_outpaint.options import SAMPLING_PRESETS, OptionError, SamplingOptions, add_speed_arguments, preset_with
from salient_outpaint.output_settings import weights_fingerprint
from salient_outpaint.outputs import check_output_folder, check_spares_inputs, ends_in_one_line
from salient_outpaint.pipeline import OutpaintPipeline
from salient_outpaint.precision import add_dtype_argument, default_dtype
from salient_outpaint.sampling import SAMPLERS
from salient_outpaint.segmentation import SEGMENTERS, SegmentPrompt, automatic_mask, make_segmenter

SAMPLING_FLAGS = ("steps", "guidance", "control_scale", "sampler", "guidance_end", "cache_interval",
                  "reuse_guidance")  # set by --preset-sampling unless given


def parse_args(argv=None) -> argparse.Namespace:
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
    masks = parser.add_argument_group("automatic masks (a photo without --mask, alpha or plain backdrop)")
    masks.add_argument("--segmenter", choices=SEGMENTERS, default="inspyrenet",
                       help="inspyrenet: the salient object, as the authors (pip install -e '.[mask]'); sam: the "
                            "object at --point/--box; colour: the toy world's (default: inspyrenet)")
    masks.add_argument("--mask-weights", help="the segmenter's weights: transparent-background's ckpt_base.pth, "
                                              "or a segment-anything checkpoint")
    masks.add_argument("--point", action="append", default=[], type=point, metavar="X,Y",
                       help="a pixel on the object (repeatable; sam, colour)")
    masks.add_argument("--box", type=box, metavar="X0,Y0,X1,Y1", help="a box around the object (sam, colour)")
    masks.add_argument("--mask-threshold", type=float, help="make the mask binary, cut at this value in (0, 1] "
                                                            "(default: soft, as the authors)")
    masks.add_argument("--mask-grow", type=int, default=0, help="grow the mask by pixels, negative shrinks "
                                                                "(makes it binary; default: 0)")
    sampling = parser.add_argument_group("sampling (explicit flags override --preset-sampling)")
    sampling.add_argument("--preset-sampling", choices=sorted(SAMPLING_PRESETS),
                          help="authors: the authors' notebook, UniPC, 20 steps, guidance 7.5, control scale 1; "
                               "fast: the same guidance and scale at under 0.30x its FLOPs (10 steps, feature reuse)")
    default = SamplingOptions()
    sampling.add_argument("--steps", type=int, help=f"sampling steps (default: {default.steps})")
    sampling.add_argument("--guidance", type=float, help=f"classifier-free guidance scale (default: {default.guidance})")
    sampling.add_argument("--control-scale", type=float,
                          help=f"ControlNet strength; 0 gives plain SI2 (default: {default.control_scale})")
    sampling.add_argument("--sampler", choices=sorted(SAMPLERS), help=f"(default: {default.sampler})")
    add_speed_arguments(sampling, default)
    sampling.add_argument("--control-start", type=float, default=0.0,
                          help="the fraction of the steps after which the ControlNet starts acting (default: 0)")
    sampling.add_argument("--control-end", type=float, default=1.0,
                          help="the fraction of the steps after which it stops (default: 1)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM noise (default: 0, deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="every input starts from this seed (default: 0)")
    parser.add_argument("--num-images", type=int, default=4, help="images per input (default: 4)")
    parser.add_argument("--batch-size", type=int, default=4,
                        help="images generated at once; lower it if memory runs out (default: 4)")
    parser.add_argument("--resolution", type=int,
                        help="working size: sampled at about this squared pixel area, aspect ratio kept (default: "
                             f"the model's, 512 for SD2; at most {MAX_RESOLUTION}). Memory and time grow with its "
                             "square and attention's with its fourth power: 1024 takes 4x the memory of 512 and "
                             "over 4x the time, 2048 at least 16x; above the training size the model also "
                             "repeats itself")
    parser.add_argument("--raw", action="store_true", help="write the model's output at the working size, "
                                                           "without resizing and pasting the object back")
    add_hires_arguments(parser)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="largest photo, in pixels, read from its header before it is decoded "
                             f"(default: {DEFAULT_MAX_PIXELS:,})")
    parser.add_argument("--out", default="outputs", help="output folder; not the folder of the inputs "
                                                         "(default: outputs)")
    parser.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="architecture (default: toy without --checkpoint, else sd2-inpaint)")
    parser.add_argument("--checkpoint", help="SI2 weights: an ldm file or a diffusers folder "
                                             f"(default: the toy model in {TOY_WEIGHTS.relative_to(REPOSITORY)})")
    parser.add_argument("--controlnet", help="ControlNet weights in any layout (default: the one in --checkpoint)")
    parser.add_argument("--no-controlnet", action="store_true", help="sample with SI2 alone (the baseline)")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    add_dtype_argument(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile the networks (pays off over many "
                                                               "steps; the first image waits for the compilation)")
    return parser.parse_args(argv)


def numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    values = text.split(",")
    try:
        if len(values) == count:
            return tuple(float(value) for value in values)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected {what}, e.g. {','.join(['10'] * count)}; got {text!r}")


def point(text: str) -> tuple[float, float]:
    return numbers(text, 2, "X,Y in pixels")


def box(text: str) -> tuple[float, float, float, float]:
    return numbers(text, 4, "X0,Y0,X1,Y1 in pixels")


def sampling_options(args) -> SamplingOptions:
    """The options of --preset-sampling (or the defaults), overridden by the flags given explicitly;
    a value out of range is an OptionError."""
    given = {name: getattr(args, name) for name in SAMPLING_FLAGS}
    if args.no_controlnet:
        given["control_scale"] = 0.0
    return preset_with(args.preset_sampling, SamplingOptions(), **given, eta=args.eta,
                       control_start=args.control_start, control_end=args.control_end)


def check_args(args) -> None:
    """The flags SamplingOptions does not hold in range, before anything is loaded."""
    for flag, value in (("--num-images", args.num_images), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.mask_threshold is not None and not 0 < args.mask_threshold <= 1:
        raise ValueError(f"--mask-threshold must be in (0, 1], got {args.mask_threshold:g}")
    if (args.point or args.box) and args.segmenter == "inspyrenet":
        raise ValueError("--point and --box say which object to take; InSPyReNet finds the salient object by "
                         "itself: give --segmenter sam (or colour for the toy world)")
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, 2**63 - 1], got {args.seed}")
    if args.resolution is not None and not (8 <= args.resolution <= MAX_RESOLUTION and args.resolution % 8 == 0):
        raise ValueError(f"--resolution must be a multiple of 8 from 8 to {MAX_RESOLUTION}, got {args.resolution}")
    check_max_pixels(args.max_pixels)
    if args.mask_weights and not Path(args.mask_weights).is_file():
        raise FileNotFoundError(f"--mask-weights {args.mask_weights} is not a file")
    if args.inputs and (args.image or args.mask or args.prompt):
        raise ValueError("--inputs gives every image, mask and prompt; leave out --image, --mask and --prompt")
    if args.image and args.prompt is None:
        raise ValueError("give --prompt: what the new background should show")
    check_device(args.device)


def list_jobs(args):
    if args.inputs:
        return jobs_from_manifest(Path(args.inputs))
    if args.image:
        return jobs_from_images(Path(args.image), Path(args.mask) if args.mask else None, args.prompt)
    prompt = args.prompt if args.prompt is not None else (TOY_EXAMPLE / "prompt.txt").read_text().strip()
    return jobs_from_images(TOY_EXAMPLE / "object.png", Path(args.mask or TOY_EXAMPLE / "mask.png"), prompt)


def output_settings(args, options: SamplingOptions, hires: HiresOptions | None, device) -> dict:
    """What shapes the images, recorded in OUT/settings.json: a rerun skips an input only when these match."""
    weights = {"checkpoint": args.checkpoint or TOY_WEIGHTS, "mask_weights": args.mask_weights,
               "controlnet": None if args.no_controlnet else args.controlnet}
    return {"sampling": asdict(options), "hires": asdict(hires) if hires else None,
            "prompt": args.prompt, "negative_prompt": args.negative_prompt,
            "seed": args.seed, "resolution": args.resolution, "raw": args.raw, "preset": args.preset,
            "dtype": args.dtype or default_dtype(device),
            "masks": {"segmenter": args.segmenter, "point": args.point, "box": args.box,
                      "threshold": args.mask_threshold, "grow": args.mask_grow},
            "weights": {name: weights_fingerprint(path) for name, path in weights.items() if path}}


def mask_finder(args):
    """(image, path) -> object mask, for photos without one: --segmenter, loaded when a photo first needs it."""
    prompt = SegmentPrompt(points=tuple(args.point), box=args.box)
    loaded = []

    def find_mask(image, path: Path):
        if not loaded:
            loaded.append(make_segmenter(args.segmenter, args.mask_weights, args.device))
        return automatic_mask(loaded[0], image, prompt, args.mask_threshold, args.mask_grow, name=str(path))

    return find_mask


def generate(args) -> int:
    """One process, or one of several under torchrun: each makes its share, rank 0 speaks for the run."""
    try:
        options = sampling_options(args)
        hires = hires_options(args)
        check_args(args)
        process = distributed.start_sharing(args.device)
        jobs = list_jobs(args)
        out = check_output_folder(args.out)  # before the models: a wrong --out costs nothing
        check_spares_inputs(planned_outputs(jobs, out, args.num_images),
                            input_files(jobs) + ([Path(args.inputs)] if args.inputs else []))
        todo = distributed.on_main(process, lambda: plan_batch(  # rank 0 plans; every process learns the plan
            jobs, out, output_settings(args, options, hires, process.device), args.num_images, args.overwrite))
        models = load_models(args.checkpoint, args.controlnet, args.preset, with_controlnet=not args.no_controlnet,
                             dtype=args.dtype, device=process.device)
        if args.compile:
            compile_models(models)
    except OptionError as error:
        return refuse(error.with_flags())
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        return refuse(str(error))
    try:
        summary = run_batch(OutpaintPipeline(models, process.device), jobs, todo, out, num_images=args.num_images,
                            batch_size=args.batch_size, options=options, negative_prompt=args.negative_prompt,
                            seed=args.seed, resolution=args.resolution, raw=args.raw, find_mask=mask_finder(args),
                            max_pixels=args.max_pixels, hires=hires, process=process)
    except distributed.PeerLost as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        distributed.stop()
    if process.is_main:
        print(f"wrote {summary.images} images for {len(summary.done)} of {len(jobs)} inputs to {out}"
              + (f"; {len(summary.skipped)} already done, skipped (--overwrite redoes them)" if summary.skipped else ""))
        if summary.failed:
            names = ", ".join(name for name, _ in summary.failed)
            print(f"error: {len(summary.failed)} of {len(jobs)} inputs failed (see above): {names}", file=sys.stderr)
    return 1 if summary.failed else 0


def refuse(message: str) -> int:
    """A flag or an input that stops the run before any work: one line (from rank 0 alone: every process
    finds the same), exit code 2."""
    if distributed.launched_as_main():
        print(f"error: {message}", file=sys.stderr)
    distributed.stop()
    return 2


def main(argv=None) -> int:
    args = parse_args(argv)
    with warnings.catch_warnings():  # warnings (a truncated prompt) as one line each
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: tqdm.write(f"warning: {message}", file=sys.stderr)
        if args.mask and args.mask_grow:
            warnings.warn("--mask-grow shapes the masks a segmenter finds; the --mask files are used as they are")
        return ends_in_one_line(lambda: generate(args))


if __name__ == "__main__":
    sys.exit(main())
