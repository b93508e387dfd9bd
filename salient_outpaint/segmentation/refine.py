"""From a segmenter's soft map to the mask used: cut at a threshold, then grow or shrink by whole pixels."""
from __future__ import annotations

import torch

from ..data.masks import dilate, erode


def refine_mask(soft_map: torch.Tensor, threshold: float = 0.5, grow: int = 0) -> torch.Tensor:
    """(1, H, W) map in [0, 1] -> (1, H, W) binary float mask: 1 where soft_map >= threshold, then grown by
    `grow` pixels (negative shrinks) with a square structuring element, so a k x k square becomes
    (k + 2 grow) x (k + 2 grow): every pixel within `grow` steps, diagonals included, of the object."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the mask threshold must be in (0, 1], not {threshold:g}")
    mask = (soft_map >= threshold).float()
    return dilate(mask, grow) if grow >= 0 else erode(mask, -grow)
