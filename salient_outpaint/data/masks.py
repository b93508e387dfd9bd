"""Mask utilities. Masks are float tensors (..., H, W) in {0, 1}; which region 1 marks is said by
the name (object_mask, paint_mask; see conditioning.py)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def binarize(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return (mask >= threshold).to(torch.float32)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a (..., H, W) binary mask by `pixels` (square neighbourhood)."""
    if pixels <= 0:
        return mask
    shape = mask.shape
    flat = mask.reshape(-1, 1, *shape[-2:]).float()
    return F.max_pool2d(flat, 2 * pixels + 1, stride=1, padding=pixels).reshape(shape)


def erode(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Shrink a (..., H, W) binary mask by `pixels`."""
    return 1.0 - dilate(1.0 - mask, pixels)


def random_inpainting_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(H, W) paint mask of the kind SD inpainting was trained with: a few boxes and thick
    brush strokes, covering anything from a sliver to most of the image."""
    mask = torch.zeros(height, width)
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    for _ in range(int(torch.randint(1, 4, (), generator=generator))):
        if float(torch.rand((), generator=generator)) < 0.5:  # a box
            box_height, box_width = uniform(0.15, 0.7) * height, uniform(0.15, 0.7) * width
            top, left = uniform(0, height - box_height), uniform(0, width - box_width)
            inside = (rows >= top) & (rows < top + box_height) & (cols >= left) & (cols < left + box_width)
        else:  # a stroke: a thick line segment
            row, col = uniform(0, height), uniform(0, width)
            angle, length = uniform(0, 2 * math.pi), uniform(0.3, 0.9) * max(height, width)
            radius = uniform(0.04, 0.12) * max(height, width)
            end_row, end_col = row + length * math.sin(angle), col + length * math.cos(angle)
            along = ((rows - row) * (end_row - row) + (cols - col) * (end_col - col)) / length ** 2
            along = along.clamp(0, 1)
            distance = ((rows - row - along * (end_row - row)) ** 2 + (cols - col - along * (end_col - col)) ** 2)
            inside = distance <= radius ** 2
        mask[inside] = 1.0
    return mask


def feathered_paste(generated: torch.Tensor, original: torch.Tensor, object_mask: torch.Tensor,
                    feather: int) -> torch.Tensor:
    """Put the original object pixels back onto generated images.

    generated (N, 3, H, W), original (1, 3, H, W), object_mask (1, 1, H, W). Inside the object,
    `feather` pixels from its edge, the original is kept exactly; over the last `feather` pixels
    the two blend, so that the VAE's slightly different rendition of the edge does not show a seam.
    """
    if feather <= 0:
        weight = object_mask
    else:
        core = erode(object_mask, feather)
        weight = F.avg_pool2d(core, 2 * feather + 1, stride=1, padding=feather, count_include_pad=False)
        weight = torch.maximum(weight, core) * object_mask
    return weight * original + (1 - weight) * generated
