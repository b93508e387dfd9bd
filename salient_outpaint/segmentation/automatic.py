"""The object mask of a bare photo (no mask file, no alpha, no plain backdrop): a segmenter's map,
used soft as the authors do, or cut and grown when asked (`--mask-threshold`, `--mask-grow`)."""
from __future__ import annotations

import torch

from ..data.masks import binarize
from .interface import SegmentPrompt, Segmenter, SegmenterError
from .refine import refine_mask


def automatic_mask(segmenter: Segmenter, image: torch.Tensor, prompt: SegmentPrompt | None = None,
                   threshold: float | None = None, grow: int = 0, name: str = "the image") -> torch.Tensor:
    """image (3, H, W) in [-1, 1] -> (1, H, W) object mask in [0, 1]: the soft map as it comes, or, with a
    threshold or a grow, binary (refine_mask). Refuses a map with no object pixel (none above 0.5)."""
    soft_map = segmenter(image, prompt)
    mask = soft_map if threshold is None and grow == 0 else refine_mask(soft_map, threshold, grow)
    if not binarize(mask).any() and grow < 0 and binarize(soft_map).any():
        raise SegmenterError(f"--mask-grow {grow} shrank the object in {name} to nothing; shrink it less")
    if not binarize(mask).any():
        raise SegmenterError(f"the segmenter found no object in {name}; point at it (--segmenter sam --point X,Y "
                             "or --box X0,Y0,X1,Y1), lower --mask-threshold, or give the mask with --mask")
    return mask
