"""Masks for a folder of images with any segmenter: how salient-object training data is made from photos
that come without masks (the paper made its COCO masks with InSPyReNet).

    python -m salient_outpaint.segmentation make-masks IMAGES OUT --segmenter inspyrenet --mask-weights ckpt_base.pth

Writes OUT/<image stem>.png, white = object: the soft map as 8-bit grey, or binary with --threshold
(and --grow). OUT is then the masks folder of a salient-object dataset (docs/datasets.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..data.images import images_in, load_image
from ..files import atomic_write
from ..inputs import check_number
from ..outputs import check_output_folder, check_spares_inputs, ends_in_one_line
from . import SEGMENTERS, Segmenter, make_segmenter, refine_mask


def make_masks(segmenter: Segmenter, images: Path, out: Path, threshold: float | None = None, grow: int = 0,
               progress: bool = False, failed: list[str] | None = None) -> list[Path]:
    """One mask per image of the folder `images`, written to `out`; returns the masks' paths. Where they
    go is checked first (a folder this can write, no image overwritten by a mask). An image that cannot
    be read is raised, or with `failed` reported there (and in one line) and passed over."""
    paths = images_in(images) if images.is_dir() else []
    if not paths:
        raise FileNotFoundError(f"no images in {images}")
    check_output_folder(out, "OUT")
    check_spares_inputs([mask_file(out, path) for path in paths], paths, "OUT")
    written = []
    for path in tqdm(paths, desc="masks", disable=not progress):
        try:
            soft_map = segmenter(load_image(path))  # (1, H, W) in [0, 1]
        except (FileNotFoundError, ValueError) as error:  # SegmenterError and InputError are ValueErrors
            if failed is None:
                raise
            failed.append(f"{path}: {error}")
            tqdm.write(f"error: {path}: {error}; skipped", file=sys.stderr)
            continue
        mask = soft_map if threshold is None and grow == 0 else refine_mask(soft_map, threshold, grow)
        grey = (mask[0] * 255).round().to(torch.uint8).cpu().numpy()
        written.append(mask_file(out, path))
        atomic_write(written[-1], lambda temporary: Image.fromarray(grey).save(temporary, format="PNG"))
    return written


def mask_file(out: Path, image: Path) -> Path:
    return out / f"{image.stem}.png"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salient_outpaint.segmentation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("make-masks", help="a mask for every image of a folder")
    command.add_argument("images", type=Path, help="folder of images")
    command.add_argument("out", help="folder for the masks, <image stem>.png (not the folder of the images)")
    command.add_argument("--segmenter", choices=SEGMENTERS, default="inspyrenet", help="(default: inspyrenet)")
    command.add_argument("--mask-weights", help="the segmenter's weights file (inspyrenet: ckpt_base.pth)")
    command.add_argument("--threshold", type=float, help="write binary masks cut at this value in (0, 1] "
                                                         "(default: soft)")
    command.add_argument("--grow", type=int, default=0, help="grow (or, negative, shrink) binary masks by pixels")
    command.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    failed = []

    def work() -> int:
        try:
            if args.threshold is not None:
                check_number("--threshold", args.threshold, above=0, at_most=1)
            out = check_output_folder(args.out, "OUT")
            segmenter = make_segmenter(args.segmenter, args.mask_weights, args.device)
            written = make_masks(segmenter, args.images, out, args.threshold, args.grow, progress=True, failed=failed)
        except (FileNotFoundError, ValueError) as error:
            parser.exit(2, f"error: {error}\n")
        print(f"wrote {len(written)} masks to {args.out}")
        if failed:
            print(f"error: {len(failed)} image(s) failed (see above)", file=sys.stderr)
            return 1
        return 0

    return ends_in_one_line(work)
