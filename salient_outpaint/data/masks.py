"""Mask utilities. Masks are float tensors (..., H, W) in {0, 1}; which region 1 marks is said by
the name (object_mask, paint_mask; see conditioning.py)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def binarize(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return (mask >= threshold).to(torch.float32)


def window_max(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over [i - radius, i + radius] along the last dim, for values >= 0 (the ends are padded
    with 0, so they never win). Doubling windows make it log2(radius) passes rather than 2 radius + 1
    comparisons per pixel: a feather 70 pixels wide on a 3000x2000 photo takes a fraction of a second."""
    window = 2 * radius + 1
    table = F.pad(values, (radius, radius))  # (..., L + 2r); table[i] = max of [i, i + span)
    span = 1
    while 2 * span <= window:
        table = torch.maximum(table[..., :-span], table[..., span:])
        span *= 2
    length = values.shape[-1]
    return torch.maximum(table[..., :length], table[..., window - span:window - span + length])


def window_mean(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over [i - radius, i + radius] along the last dim, of the values inside: differences of a
    running sum, so the cost does not grow with the radius."""
    length, window = values.shape[-1], 2 * radius + 1

    def running_sum(row: torch.Tensor) -> torch.Tensor:  # (..., L) -> (..., L + 2r + 1), r leading zeros
        sums = F.pad(row.double(), (radius + 1, 0)).cumsum(-1)
        return torch.cat([sums, sums[..., -1:].expand(*sums.shape[:-1], radius)], dim=-1)  # then the total

    sums, counts = running_sum(values), running_sum(torch.ones(length))
    return ((sums[..., window:] - sums[..., :-window]) / (counts[window:] - counts[:-window])).to(values.dtype)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a (..., H, W) mask in [0, 1] by `pixels` (square neighbourhood: rows, then columns)."""
    if pixels <= 0:
        return mask
    grown = window_max(mask.float(), pixels)
    return window_max(grown.transpose(-1, -2), pixels).transpose(-1, -2)


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

    generated (N, 3, H, W), original (1, 3, H, W), object_mask (1, 1, H, W) in [0, 1]. Inside the
    object, `feather` pixels from its edge, the original is kept exactly; over the last `feather`
    pixels the two blend, so that the VAE's slightly different rendition of the edge does not show a
    seam. A soft mask stays soft: the original's weight never exceeds the mask.
    """
    if feather <= 0:
        weight = object_mask
    else:
        core = erode(object_mask, feather)
        weight = window_mean(core, feather)  # a box blur: rows, then columns
        weight = window_mean(weight.transpose(-1, -2), feather).transpose(-1, -2)
        weight = torch.maximum(weight, core) * object_mask
    return weight * original + (1 - weight) * generated
