"""Object expansion: how far a generated image grows the salient object past its original mask.

The paper's metric needs no human labels. Segment the object again in the generated image
(SAM prompted with points inside the original mask, see segmentation/sam.py), giving `m_out`;
with the original mask `m_in`,

    E = area(m_out ∪ m_in) − area(m_in)

i.e. the pixels the object gained. We report E in pixels, as a fraction of the image and as a
multiple of the object's own area (report.py summarises it per method and per category).

The prompt points for that segmentation, sampled deep inside the original mask so that a point never
lands on the object's edge, come from data/masks.py (`sample_points_in_mask`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.masks import check_bool_mask


@dataclass(frozen=True)
class ObjectExpansion:
    expanded_pixels: int  # area(m_out ∪ m_in) − area(m_in)
    expansion_fraction: float  # expanded_pixels / (H * W)
    expansion_ratio: float  # expanded_pixels / area(m_in)


def object_expansion(original_mask: torch.Tensor, generated_object_mask: torch.Tensor) -> ObjectExpansion:
    """E for one image. Both masks are (H, W) bool: the object before generation and as found after."""
    check_bool_mask(original_mask, "original_mask")
    check_bool_mask(generated_object_mask, "generated_object_mask")
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
