"""Measure object expansion (and FID, LPIPS diversity, CLIP score, object similarity) of generated backgrounds.

  # the toy world: generate for 50 held-out scenes with and without the ControlNet, then measure
  python evaluate.py --generate --toy 50 --num-images 2 --out runs/eval_toy
  # a variant's ControlNet (docs/experiments.md), or the shipped one at another scale
  python evaluate.py --generate --toy 50 --num-images 2 --methods controlnet --controlnet RUN/weights/controlnet \
      --out runs/eval_variant
  python evaluate.py --generate --toy 50 --num-images 2 --methods controlnet --control-scale 0.5 --out runs/eval_half
  python evaluate.py --generate --toy 50 --num-images 2 --methods controlnet --control-end 0.5 --out runs/eval_early
  # your inputs (a JSONL manifest) and images made elsewhere, one folder per method
  python evaluate.py --inputs manifest.jsonl --generated ours=out/ours si2=out/si2 \\
      --segmenter sam --mask-weights weights/sam_vit_h_4b8939.pth --out runs/eval
  # the authors' measure: the salient-object detector on each output (pip install -e ".[mask]")
  python evaluate.py ... --segmenter inspyrenet --mask-weights weights/ckpt_base.pth
  # or generate them here with SD2-inpainting, with and without the ControlNet, on the same noise
  python evaluate.py --inputs manifest.jsonl --generate --checkpoint weights/stable-diffusion-2-inpainting \\
      --controlnet weights/photo-background-generation/controlnet --mask-weights ... --out runs/eval

  # the generation shared by 4 processes, one GPU each (docs/evaluation.md); rank 0 measures
  torchrun --nproc_per_node 4 evaluate.py --generate --toy 500 --device cuda --out runs/eval_toy

Manifest lines: {"id": "0001", "image": "0001.png", "mask": "0001_mask.png", "prompt": "...",
"category": "kitchen"} (paths relative to the manifest; id and category optional). Generated images
are named <id>_<k>.png, k = 0, 1, ...; --generate writes them to OUT/<method>/. Writes OUT/report.json
(every image's record, the summary per method and category) and OUT/report.md. Metrics whose weights
are not given are skipped, with a note naming the flag. Diversity between the samples of an input (per
method and category) is measured by LPIPS given its weights, and always by its toy-world stand-in, the
mean per-pixel distance between samples in the background. See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from salient_outpaint import distributed
from salient_outpaint.config import PRESETS
from salient_outpaint.evaluation.procedure import METHODS, Generation, Metrics, evaluate
from salient_outpaint.inputs import MAX_SEED
from salient_outpaint.options import SAMPLING_PRESETS, OptionError, SamplingOptions, add_speed_arguments, preset_with
from salient_outpaint.outputs import check_output_folder, ends_in_one_line
from salient_outpaint.precision import add_dtype_argument
from salient_outpaint.sampling import SAMPLERS
from salient_outpaint.segmentation import SEGMENTERS


DEFAULT_SAMPLING = SamplingOptions(steps=20, guidance=5.0, sampler="dpm++2m")  # without --preset-sampling


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("inputs and images")
    source.add_argument("--inputs", metavar="MANIFEST", help="JSONL, one {id, image, mask, prompt, category} per line")
    source.add_argument("--toy", type=int, metavar="N", help="use N held-out toy-world scenes as the inputs "
                                                             "(written to OUT/inputs/ with their manifest)")
    source.add_argument("--generated", nargs="+", default=[], metavar="METHOD=DIR",
                        help="folders of generated images <id>_<k>.png, one per method (DIR alone: the "
                             "folder's name is the method's)")
    source.add_argument("--generate", action="store_true", help="generate the images here, for each of --methods")
    source.add_argument("--out", default="runs/evaluation", help="report folder (default: runs/evaluation)")
    generation = parser.add_argument_group("generation (with --generate)")
    generation.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                            help="controlnet: SI2 steered by the ControlNet; no-controlnet: SI2 alone "
                                 "(default: both)")
    generation.add_argument("--checkpoint", help="SI2 weights (default: the shipped toy model, weights/toy)")
    generation.add_argument("--controlnet", help="ControlNet weights (default: the one in --checkpoint); a variant "
                                                 "trained with train.py loads as its config.json says")
    generation.add_argument("--preset-sampling", choices=sorted(SAMPLING_PRESETS),
                            help="named sampling settings (options.py); the flags below override them when given")
    generation.add_argument("--control-scale", type=float,
                            help="the ControlNet's conditioning scale in the controlnet method (default: 1)")
    generation.add_argument("--control-start", type=float,
                            help="the controlnet method's ControlNet acts from this fraction of the steps (default: 0)")
    generation.add_argument("--control-end", type=float,
                            help="... to this one (default: 1)")
    generation.add_argument("--preset", choices=sorted(PRESETS),
                            help="architecture (default: toy without --checkpoint, else sd2-inpaint)")
    generation.add_argument("--num-images", type=int, default=4, help="samples per input (default: 4)")
    generation.add_argument("--steps", type=int, help=f"(default: {DEFAULT_SAMPLING.steps})")
    generation.add_argument("--guidance", type=float,
                            help=f"classifier-free guidance (default: {DEFAULT_SAMPLING.guidance:g})")
    generation.add_argument("--sampler", choices=sorted(SAMPLERS), help=f"(default: {DEFAULT_SAMPLING.sampler})")
    add_speed_arguments(generation, DEFAULT_SAMPLING)
    generation.add_argument("--seed", type=int, default=0, help="input i uses seed + i (default: 0)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_dtype_argument(generation, what="the generating networks are stored and run in")
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--segmenter", choices=list(SEGMENTERS),
                         help="how the object is found again: sam (the paper's, prompted inside the original "
                              "mask), inspyrenet (the authors' notebook: the salient object of the output) or "
                              "colour (toy world); default: colour with --toy, else sam")
    metrics.add_argument("--mask-weights",
                         help="the segmenter's weights: a segment-anything checkpoint (sam_vit_h_4b8939.pth) "
                              "or transparent-background's ckpt_base.pth")
    metrics.add_argument("--sam-type", choices=["vit_b", "vit_l", "vit_h"],
                         help="SAM's size (default: read from the weights)")
    metrics.add_argument("--fid-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth: enables FID")
    metrics.add_argument("--real", help="folder of real images for FID (default: the input images)")
    metrics.add_argument("--lpips-backbone", choices=["alex", "vgg"], default="alex", help="(default: alex)")
    metrics.add_argument("--lpips-weights", nargs=2, metavar=("BACKBONE", "LINEAR"),
                         help="torchvision's backbone file and the lpips linear layers: enables LPIPS diversity")
    metrics.add_argument("--clip-checkpoint", help="open_clip weights file: enables CLIP score and object similarity")
    metrics.add_argument("--clip-model", default="ViT-H-14", help="its open_clip architecture (default: ViT-H-14)")
    return parser.parse_args(argv)


def given_folders(args) -> dict[str, Path]:
    """--generated METHOD=DIR ... -> {method: folder}, each folder there."""
    folders = {}
    for spec in args.generated:
        method, separator, folder = spec.partition("=")
        method, folder = (method, Path(folder)) if separator else (Path(spec).name, Path(spec))
        if method in folders or (args.generate and method in args.methods):
            raise ValueError(f"two image folders are called {method!r}; name them with --generated METHOD=DIR")
        if not folder.is_dir():
            raise FileNotFoundError(f"the folder of {method}'s images, {folder}, does not exist")
        folders[method] = folder
    return folders


def generation(args) -> Generation | None:
    """--generate's sampling options per method, checked before anything is loaded or written."""
    if not args.generate:
        return None
    if args.num_images < 1:
        raise ValueError(f"--num-images must be at least 1, got {args.num_images}")
    if not 0 <= args.seed <= MAX_SEED - (args.toy or 0):
        raise ValueError(f"--seed must be in [0, 2**63 - 1 - the number of inputs], got {args.seed} (input i uses "
                         "seed + i)")
    given = dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, control_start=args.control_start,
                 control_end=args.control_end, guidance_end=args.guidance_end, cache_interval=args.cache_interval,
                 reuse_guidance=args.reuse_guidance)
    options = {method: preset_with(args.preset_sampling, DEFAULT_SAMPLING, **given,
                                   control_scale=args.control_scale if method == "controlnet" else METHODS[method])
               for method in args.methods}
    return Generation(options=options, checkpoint=args.checkpoint, controlnet=args.controlnet, preset=args.preset,
                      num_images=args.num_images, seed=args.seed, dtype=args.dtype)


def metrics(args) -> Metrics:
    return Metrics(segmenter=args.segmenter or ("colour" if args.toy else "sam"), mask_weights=args.mask_weights,
                   sam_type=args.sam_type, fid_weights=args.fid_weights, real=args.real,
                   lpips_backbone=args.lpips_backbone,
                   lpips_weights=tuple(args.lpips_weights) if args.lpips_weights else None,
                   clip_checkpoint=args.clip_checkpoint, clip_model=args.clip_model)


def main(argv=None) -> int:
    args = parse_args(argv)
    return ends_in_one_line(lambda: run(args))


def run(args) -> int:
    out = Path(args.out)
    skipped = []
    with warnings.catch_warnings():  # warnings (a truncated prompt) as one line each
        warnings.showwarning = lambda message, *rest: print(f"warning: {message}", file=sys.stderr)
        try:
            if bool(args.inputs) == bool(args.toy):
                raise ValueError("give the inputs either as --inputs MANIFEST or as --toy N")
            if not args.generated and not args.generate:
                raise ValueError("nothing to evaluate: give --generated METHOD=DIR ... or --generate")
            to_generate = generation(args)
            check_output_folder(args.out)  # before any work; '' is refused here, before it becomes Path(".")
            process = distributed.start_sharing(args.device)  # torchrun: the processes share --generate
            measured = evaluate(out, manifest=Path(args.inputs) if args.inputs else None, toy=args.toy,
                                folders=given_folders(args), generation=to_generate, metrics=metrics(args),
                                device=process.device, process=process, skipped=skipped)
        except OptionError as error:
            return refuse(error.with_flags())
        except (FileNotFoundError, ValueError, KeyError, ImportError) as error:  # CheckpointError is a ValueError
            return refuse(error.args[0] if isinstance(error, KeyError) and error.args else error)
        except distributed.PeerLost as error:
            print(f"error: {error}", file=sys.stderr)
            distributed.stop()
            return 1
    distributed.stop()
    if measured is None:  # a process that only generated: rank 0 reports
        return 1 if skipped else 0
    print(measured[1], end="")
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    if skipped:
        print(f"error: {len(skipped)} input(s) skipped (see above and the report's notes)", file=sys.stderr)
        return 1
    return 0


def refuse(message) -> int:
    """One line (from rank 0 alone under torchrun: every process finds the same), exit code 2."""
    if distributed.launched_as_main():
        print(f"error: {message}", file=sys.stderr)
    distributed.stop()
    return 2


if __name__ == "__main__":
    sys.exit(main())
