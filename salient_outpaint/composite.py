"""The photo's own object over a background painted at another size: the full-size composite.

The model paints at its working size; its output holds the object too, as the VAE drew it, a little
soft. Resized to the photo's size, that rim would spread over many of the photo's pixels (21 for a
1600x1200 photo through the 64 px toy model), so it is not used at all:

    generated (N, 3, h, w) --(fill_around: the object's pixels and the rim next to them replaced by
        the background around them)--> background only --(bicubic resize)--> (N, 3, H, W)
    out = weight * photo + (1 - weight) * background,  weight from the photo's own mask (1, H, W):
        a soft matte (any value strictly between 0 and 1) is its own weight, out = a * photo + (1 - a) * bg;
        a binary mask is feathered over at most `feather` pixels inside its edge (Euclidean distance),
        so everything farther in is the photo's, byte for byte.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data.masks import dilate


def fill_around(images: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """images (N, C, h, w), known (1, 1, h, w) in {0, 1} with at least one 1 -> images whose unknown
    pixels are filled from the known ones around them (pull-push: averages of the known pixels over
    ever coarser 2x2 blocks, then pushed back down, each level keeping what it knows). Known pixels
    are unchanged."""
    if min(images.shape[-2:]) <= 1:
        weight = known.sum()
        return torch.where(known > 0, images, (images * known).sum((-2, -1), keepdim=True) / weight)
    sums = F.avg_pool2d(images * known, 2, ceil_mode=True)  # (N, C, h/2, w/2)
    weights = F.avg_pool2d(known, 2, ceil_mode=True)  # fraction of each block known
    coarse = fill_around(sums / weights.clamp_min(1e-12), (weights > 0).float())
    pushed = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)[..., :images.shape[-2],
                                                                                          :images.shape[-1]]
    return torch.where(known > 0, images, pushed)


def object_region(working_mask: torch.Tensor, rim: int = 1) -> torch.Tensor:
    """(1, 1, h, w): where the generated image may show the object: every pixel the (resized, soft) mask
    touches, and `rim` more around it for the VAE's soft rendition of the edge."""
    return dilate((working_mask > 0).float(), rim)


def edge_weight(object_mask: torch.Tensor, feather: int) -> torch.Tensor:
    """(..., 1, H, W) object mask in [0, 1] -> the photo's weight in the composite, (..., 1, H, W).

    A soft matte is its own weight. A binary mask: min(1, d / feather), d the Euclidean distance to the
    nearest non-object pixel (beyond the frame counts as object: an object cut by the frame keeps its
    pixels there); only the pixels less than `feather` inside the edge blend."""
    soft = ((object_mask > 0) & (object_mask < 1)).any()
    if soft or feather <= 0:
        return object_mask
    outside = (object_mask < 1).float()
    batch = outside.reshape(-1, 1, *outside.shape[-2:])
    padded = F.pad(batch, (feather, feather, feather, feather), mode="replicate")
    height, width = batch.shape[-2:]
    distance = torch.full_like(batch, float(feather))
    for dy in range(-feather, feather + 1):
        for dx in range(-feather, feather + 1):
            offset = math.hypot(dy, dx)
            if 0 < offset < feather:
                shifted = padded[..., feather + dy:feather + dy + height, feather + dx:feather + dx + width]
                distance = torch.where(shifted > 0, distance.clamp_max(offset), distance)
    return (distance / feather).reshape(object_mask.shape) * object_mask


def composite(generated: torch.Tensor, working_mask: torch.Tensor, image: torch.Tensor, object_mask: torch.Tensor,
              feather: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """generated (N, 3, h, w) at the working size with its mask (1, h, w); image (3, H, W) in [-1, 1] and
    its object mask (1, H, W) -> (N, 3, H, W): the photo's object over the generated background.
    `weight`: edge_weight(object_mask, feather), when the caller composites the same photo image by image.

    One image at a time: at 40 megapixels a float image is 480 MB, and the background of eight at once,
    with their temporaries, would take gigabytes. lerp gives the photo's pixel exactly where the weight
    is 1 and the background's where it is 0."""
    weight = edge_weight(object_mask, feather) if weight is None else weight  # (1, H, W)
    out = torch.empty(len(generated), *image.shape, dtype=image.dtype)
    for index, one in enumerate(generated):
        torch.lerp(background(one[None], working_mask, tuple(image.shape[-2:]))[0], image, weight, out=out[index])
    return out


def background(generated: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], rim: int = 1) -> torch.Tensor:
    """generated (N, 3, h, w) with its object mask (1, h, w) -> (N, 3, *size): the background alone, the
    object and `rim` pixels around it filled from around them (fill_around), resized bicubically if size
    is another."""
    known = 1 - object_region(mask[None], rim)  # (1, 1, h, w)
    filled = fill_around(generated, known) if known.any() else generated
    if tuple(filled.shape[-2:]) == tuple(size):
        return filled
    return F.interpolate(filled, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
