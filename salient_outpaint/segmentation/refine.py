"""From a segmenter's soft map to the mask used: cut, then grow or shrink by whole pixels."""
from __future__ import annotations

import torch

from ..data.masks import binarize, dilate, erode


def refine_mask(soft_map: torch.Tensor, threshold: float | None = None, grow: int = 0) -> torch.Tensor:
    """(1, H, W) map in [0, 1] -> (1, H, W) binary float mask: the object as the pipeline cuts it (binarize:
    soft_map > 0.5), or, at a threshold the user chose (--mask-threshold), 1 where soft_map >= threshold;
    then grown by `grow` pixels (negative shrinks) with a square structuring element, so a k x k square
    becomes (k + 2 grow) x (k + 2 grow): every pixel within `grow` steps, diagonals included, of the object."""
    if threshold is None:
        mask = binarize(soft_map)
    elif 0.0 < threshold <= 1.0:
        mask = (soft_map >= threshold).float()
    else:
        raise ValueError(f"the mask threshold must be in (0, 1], not {threshold:g}")
    return dilate(mask, grow) if grow >= 0 else erode(mask, -grow)
