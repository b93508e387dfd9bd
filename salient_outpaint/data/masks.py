"""Mask utilities. Masks are float tensors (..., H, W) in {0, 1}; which region 1 marks is said by
the name (object_mask, paint_mask; see conditioning.py). The geometry that measures and prompts on a
mask (distance to the background, points in its core) takes (H, W) bool masks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


# Prompt points are drawn from the pixels at least this fraction of the object's maximum depth
# (distance to the background) inside it: the object's "core".
CORE_DEPTH_FRACTION = 0.5
# Rows of the distance transform's second pass computed at once: (rows, H, W) int64 stays small.
DISTANCE_ROWS_PER_CHUNK = 16


def binarize(object_mask: torch.Tensor) -> torch.Tensor:
    """The object of a (..., H, W) object mask, binary or soft: float32, 1 where object_mask > 0.5, else 0.

    The one cut of an object mask, the pipeline's: exactly the pixels the U-Net keeps, where the paint
    mask 1 - object_mask is below 0.5 (conditioning.binary_paint_mask, SD inpainting's paint rule).
    A threshold the user chooses (--mask-threshold) is another rule: segmentation.refine_mask."""
    return (object_mask > 0.5).float()


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
    weight = feather_weight(object_mask, feather)
    return weight * original + (1 - weight) * generated


def feather_weight(object_mask: torch.Tensor, feather: int) -> torch.Tensor:
    """feathered_paste's weight of the original, (..., 1, H, W) in [0, 1]: 1 inside the object `feather`
    pixels from its edge, falling to 0 across the last `feather` pixels, never above the mask."""
    if feather <= 0:
        return object_mask
    core = erode(object_mask, feather)
    weight = window_mean(core, feather)  # a box blur: rows, then columns
    weight = window_mean(weight.transpose(-1, -2), feather).transpose(-1, -2)
    return torch.maximum(weight, core) * object_mask


def check_bool_mask(mask: torch.Tensor, name: str) -> None:
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"{name} must be an (H, W) bool tensor, got dtype {mask.dtype} and shape {tuple(mask.shape)}")


def distance_to_background(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) float: Euclidean distance from each mask pixel to the nearest pixel outside it, 0 outside.

    Pixels beyond the image border count as outside. Exact, in two separable passes: first the
    distance to the nearest background pixel within each row, then, for each pixel, the nearest
    over all rows of (that row distance)^2 + (row offset)^2.
    """
    check_bool_mask(mask, "mask")
    padded = F.pad(mask, (1, 1, 1, 1), value=False)  # (H+2, W+2): a background frame
    height, width = padded.shape
    columns = torch.arange(width).expand(height, width)
    background = ~padded
    # Every row has background at both ends (the frame), so both searches always find one.
    nearest_left = torch.where(background, columns, -1).cummax(dim=1).values
    nearest_right = torch.where(background, columns, width).flip(1).cummin(dim=1).values.flip(1)
    squared_row_distance = torch.minimum(columns - nearest_left, nearest_right - columns) ** 2  # (H+2, W+2)

    rows = torch.arange(height)
    squared_distance = torch.empty_like(squared_row_distance)
    for start in range(0, height, DISTANCE_ROWS_PER_CHUNK):
        target_rows = rows[start:start + DISTANCE_ROWS_PER_CHUNK]
        squared_row_offset = (target_rows[:, None] - rows[None, :]) ** 2  # (chunk, H+2)
        candidates = squared_row_distance[None, :, :] + squared_row_offset[:, :, None]  # (chunk, H+2, W+2)
        squared_distance[start:start + len(target_rows)] = candidates.min(dim=1).values
    return squared_distance[1:-1, 1:-1].double().sqrt()


def sample_points_in_mask(mask: torch.Tensor, num_points: int,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """(num_points, 2) int64 pixel coordinates as (x, y), SAM's order, inside the mask's core.

    Points are distinct while the core has enough pixels; a tiny core repeats points.
    """
    if num_points < 1:
        raise ValueError(f"num_points must be at least 1, got {num_points}")
    check_bool_mask(mask, "mask")
    if not mask.any():
        raise ValueError("cannot sample prompt points from an empty mask")
    depth = distance_to_background(mask)
    core_ys, core_xs = (depth >= CORE_DEPTH_FRACTION * depth.max()).nonzero(as_tuple=True)
    if len(core_ys) >= num_points:
        chosen = torch.randperm(len(core_ys), generator=generator)[:num_points]
    else:
        chosen = torch.randint(len(core_ys), (num_points,), generator=generator)
    return torch.stack([core_xs[chosen], core_ys[chosen]], dim=1)
