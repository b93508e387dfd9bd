"""Finding the salient object in a photo: the ONE segmenter interface that sample.py (masks for bare
photos), evaluate.py (the object found again in generated images) and the data tools (masks for
training images) share.

    segmenter = make_segmenter("inspyrenet", weights="ckpt_base.pth")
    soft_map = segmenter(image, prompt=None)             # (3, H, W) in [-1, 1] -> (1, H, W) in [0, 1]
    mask = refine_mask(soft_map, grow=4)                 # binary (above 0.5), grown by 4 px

  interface.py    SegmentPrompt (points, box, mask), the Segmenter call, input checks
  inspyrenet.py   the authors' salient-object detector (transparent-background), no prompt needed
  sam.py          Segment Anything, prompted by points, a box or a mask (the paper's for expansion)
  colour.py       the toy world's: its objects are regions of one palette colour
  refine.py       refine_mask: cut, grow or shrink
  automatic.py    automatic_mask: the mask of a bare photo, as sample.py makes it
  make_masks.py   masks for a folder of images (python -m salient_outpaint.segmentation make-masks)
"""
from __future__ import annotations

from pathlib import Path

import torch

from .automatic import automatic_mask
from .interface import SegmentPrompt, Segmenter, SegmenterError
from .refine import refine_mask

SEGMENTERS = ("inspyrenet", "sam", "colour")


def make_segmenter(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu",
                   **options) -> Segmenter:
    """A segmenter by name; `weights` is its local weights file (inspyrenet, sam). Options: inspyrenet
    size (the network's input side, 1024), sam model_type (read from the weights) and points_per_mask,
    colour tolerance."""
    if name == "inspyrenet":
        from .inspyrenet import InSPyReNetSegmenter
        return InSPyReNetSegmenter.from_file(weights, device=device, **options)
    if name == "sam":
        from .sam import SAMSegmenter
        return SAMSegmenter.from_checkpoint(weights, device=device, **options)
    if name == "colour":
        from .colour import ColourSegmenter
        return ColourSegmenter(**options)
    raise SegmenterError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")


__all__ = ["SEGMENTERS", "SegmentPrompt", "Segmenter", "SegmenterError", "automatic_mask", "make_segmenter",
           "refine_mask"]
