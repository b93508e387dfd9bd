"""The segmenter judged on the inputs themselves, before it judges any generated image.

Expansion is only as good as the segmenter that finds the object again. Run on an input, whose object
is exactly its mask, a good one finds the whole object (object recall 1) and nothing more (the input's
expansion against itself 0). A striped object found by one shade only, or a floor band of a similar
colour taken for the object, shows here as recall below 1 or expansion above 0, scene by scene.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.images import load_image
from ..data.manifest import ManifestInput
from ..segmentation import SegmentPrompt, Segmenter, refine_mask
from .expansion import object_expansion


@torch.no_grad()
def input_self_check(item: ManifestInput, object_mask: torch.Tensor, segmenter: Segmenter) -> dict:
    """One input, its (H, W) bool object mask -> {"id", "object_recall", "input_expansion_ratio"}: the share
    of the mask the segmenter finds in the input image, and how much it finds outside it (expansion.py)."""
    found = refine_mask(segmenter(load_image(item.image), SegmentPrompt(mask=object_mask[None].float())))[0].bool()
    recall = float((found & object_mask).sum()) / float(object_mask.sum())
    return {"id": item.id, "object_recall": recall,
            "input_expansion_ratio": object_expansion(object_mask, found).expansion_ratio}


def markdown_self_check(checks: Sequence[dict]) -> str:
    """The worst scene of each figure, then one row per scene."""
    worst = (f"lowest object recall {min(check['object_recall'] for check in checks):.4g}, highest input "
             f"expansion {max(check['input_expansion_ratio'] for check in checks):.4g} over {len(checks)} inputs")
    rows = [f"| {check['id']} | {check['object_recall']:.4g} | {check['input_expansion_ratio']:.4g} |"
            for check in checks]
    return "\n".join([worst, "", "| input | object recall | input expansion ratio |", "| --- | ---: | ---: |", *rows])
