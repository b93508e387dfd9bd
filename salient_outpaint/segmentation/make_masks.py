"""Masks for a folder of images with any segmenter: how salient-object training data is made from photos
that come without masks (the paper made its COCO masks with InSPyReNet).

    python -m salient_outpaint.segmentation make-masks IMAGES OUT --segmenter inspyrenet --mask-weights ckpt_base.pth

Writes OUT/<image stem>.png, white = object: the soft map as 8-bit grey, or binary with --threshold
(and --grow). OUT is then the masks folder of a salient-object dataset (docs/datasets.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..data.images import images_in, load_image
from . import SEGMENTERS, Segmenter, make_segmenter, refine_mask


def make_masks(segmenter: Segmenter, images: Path, out: Path, threshold: float | None = None, grow: int = 0,
               progress: bool = False) -> list[Path]:
    """One mask per image of the folder `images`, written to `out`; returns the masks' paths."""
    paths = images_in(images)
    if not paths:
        raise FileNotFoundError(f"no images in {images}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(paths, desc="masks", disable=not progress):
        soft_map = segmenter(load_image(path))  # (1, H, W) in [0, 1]
        mask = soft_map if threshold is None and grow == 0 else refine_mask(soft_map, threshold, grow)
        grey = (mask[0] * 255).round().to(torch.uint8).cpu().numpy()
        written.append(out / f"{path.stem}.png")
        Image.fromarray(grey).save(written[-1])
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salient_outpaint.segmentation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("make-masks", help="a mask for every image of a folder")
    command.add_argument("images", type=Path, help="folder of images")
    command.add_argument("out", type=Path, help="folder for the masks, <image stem>.png")
    command.add_argument("--segmenter", choices=SEGMENTERS, default="inspyrenet", help="(default: inspyrenet)")
    command.add_argument("--mask-weights", help="the segmenter's weights file (inspyrenet: ckpt_base.pth)")
    command.add_argument("--threshold", type=float, help="write binary masks cut at this value (default: soft)")
    command.add_argument("--grow", type=int, default=0, help="grow (or, negative, shrink) binary masks by pixels")
    command.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        segmenter = make_segmenter(args.segmenter, args.mask_weights, args.device)
        written = make_masks(segmenter, args.images, args.out, args.threshold, args.grow, progress=True)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {len(written)} masks to {args.out}")
    return 0
