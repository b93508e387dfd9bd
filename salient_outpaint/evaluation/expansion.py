"""Object expansion: how far a generated image grows the salient object past its original mask.

The paper's metric needs no human labels. Segment the object again in the generated image
(SAM prompted with points inside the original mask, see `segmenters.py`), giving `m_out`;
with the original mask `m_in`,

    E = area(m_out ∪ m_in) − area(m_in)

i.e. the pixels the object gained. We report E in pixels, as a fraction of the image and as a
multiple of the object's own area, and summarise it per method and per category.

Also here: the prompt points for that segmentation, sampled deep inside the original mask so
that a point never lands on the object's edge, where SAM would be unsure which side it means.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .report import CATEGORY_KEY, describe, group_by

# Prompt points are drawn from the pixels at least this fraction of the object's maximum depth
# (distance to the background) inside it: the object's "core".
CORE_DEPTH_FRACTION = 0.5
# Rows of the distance transform's second pass computed at once: (rows, H, W) int64 stays small.
DISTANCE_ROWS_PER_CHUNK = 16


@dataclass(frozen=True)
class ObjectExpansion:
    expanded_pixels: int  # area(m_out ∪ m_in) − area(m_in)
    expansion_fraction: float  # expanded_pixels / (H * W)
    expansion_ratio: float  # expanded_pixels / area(m_in)


def check_mask(mask: torch.Tensor, name: str) -> None:
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"{name} must be an (H, W) bool tensor, got dtype {mask.dtype} and shape {tuple(mask.shape)}")


def object_expansion(original_mask: torch.Tensor, generated_object_mask: torch.Tensor) -> ObjectExpansion:
    """E for one image. Both masks are (H, W) bool: the object before generation and as found after."""
    check_mask(original_mask, "original_mask")
    check_mask(generated_object_mask, "generated_object_mask")
    if original_mask.shape != generated_object_mask.shape:
        raise ValueError(f"the masks differ in size: original {tuple(original_mask.shape)}, "
                         f"generated {tuple(generated_object_mask.shape)}; resize one to the other first")
    object_area = int(original_mask.sum())
    if object_area == 0:
        raise ValueError("the original object mask is empty, so expansion relative to the object is undefined")
    expanded_pixels = int((generated_object_mask | original_mask).sum()) - object_area
    return ObjectExpansion(expanded_pixels=expanded_pixels,
                           expansion_fraction=expanded_pixels / original_mask.numel(),
                           expansion_ratio=expanded_pixels / object_area)


def distance_to_background(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) float: Euclidean distance from each mask pixel to the nearest pixel outside it, 0 outside.

    Pixels beyond the image border count as outside. Exact, in two separable passes: first the
    distance to the nearest background pixel within each row, then, for each pixel, the nearest
    over all rows of (that row distance)^2 + (row offset)^2.
    """
    check_mask(mask, "mask")
    padded = torch.nn.functional.pad(mask, (1, 1, 1, 1), value=False)  # (H+2, W+2): a background frame
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
    check_mask(mask, "mask")
    if not mask.any():
        raise ValueError("cannot sample prompt points from an empty mask")
    depth = distance_to_background(mask)
    core_ys, core_xs = (depth >= CORE_DEPTH_FRACTION * depth.max()).nonzero(as_tuple=True)
    if len(core_ys) >= num_points:
        chosen = torch.randperm(len(core_ys), generator=generator)[:num_points]
    else:
        chosen = torch.randint(len(core_ys), (num_points,), generator=generator)
    return torch.stack([core_xs[chosen], core_ys[chosen]], dim=1)


def summarise_expansion(records: Sequence[Mapping], metric: str = "expansion_ratio",
                        by_category: bool = True) -> dict:
    """Mean, median and count of one expansion field of the records (one method's), overall and per category:

        {"overall": {"mean": .., "median": .., "count": ..}, "per_category": {"animal": {...}, ...}}

    Records are dicts holding the fields of `ObjectExpansion` (e.g. `dataclasses.asdict(expansion)`)
    and, for `by_category`, a "category" such as the COCO supercategory.
    """
    summary = {"overall": describe(record[metric] for record in records)}
    if by_category:
        summary["per_category"] = {category: describe(record[metric] for record in category_records)
                                   for category, category_records in sorted(group_by(records, CATEGORY_KEY).items())}
    return summary
