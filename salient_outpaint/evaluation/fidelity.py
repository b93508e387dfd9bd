"""Fidelity of a faster sampler: how close its background is to a slow, near-converged one's.

The toy metrics (expansion, background as prompted) cannot see fine detail, which few steps lose. So a
faster setting is also compared, image by image and on the same noise, with a reference run (UniPC at
50 steps, the authors' guidance and scale): the PSNR over the background, where the two may differ
at all (the object is kept).
"""
from __future__ import annotations

import math

import torch


def background_psnr(image: torch.Tensor, reference: torch.Tensor, object_mask: torch.Tensor) -> float:
    """(3, H, W) images in [-1, 1], (H, W) bool object mask -> PSNR in dB over the background pixels, on the
    [0, 1] scale (peak 1); infinite for identical backgrounds."""
    if image.shape != reference.shape or image.shape[-2:] != object_mask.shape:
        raise ValueError(f"the images and the mask differ in size: {tuple(image.shape)}, {tuple(reference.shape)}, "
                         f"{tuple(object_mask.shape)}")
    background = ~object_mask
    if not background.any():
        raise ValueError("the object mask covers the whole image: there is no background to compare")
    error = float((((image - reference) / 2)[:, background] ** 2).mean())
    return math.inf if error == 0 else -10 * math.log10(error)
