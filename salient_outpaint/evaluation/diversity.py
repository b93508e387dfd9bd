"""How different the backgrounds painted for one input are: the open question of the paper (does
steering the background cost its variety?), measured per input and then per category.

With LPIPS weights, lpips.py's pairwise distance over whole images. Without them (the toy world has
no AlexNet), a stated stand-in: the mean per-pixel distance between two samples in the background
region, the pixels outside the original object mask, averaged over all pairs of the input's samples.
"""
from __future__ import annotations

import torch


def background_pixel_diversity(samples: torch.Tensor, object_mask: torch.Tensor) -> float:
    """Mean over all pairs i < j of the K samples (K, 3, H, W) in [-1, 1] of the mean absolute difference
    per channel over the background pixels (object_mask (H, W) bool, True = object), on the [0, 1] scale:
    0 for identical backgrounds, 1 for black against white."""
    if samples.dim() != 4 or samples.shape[0] < 2:
        raise ValueError(f"pairwise diversity needs (K, 3, H, W) samples with K >= 2, got shape {tuple(samples.shape)}")
    background = ~object_mask
    if not background.any():
        raise ValueError("the object mask covers the whole image: there is no background to compare")
    first, second = torch.triu_indices(len(samples), len(samples), offset=1)  # every pair i < j
    distance = (samples[first] - samples[second]).abs() / 2  # (pairs, 3, H, W) on the [0, 1] scale
    return float(distance[..., background].mean())
