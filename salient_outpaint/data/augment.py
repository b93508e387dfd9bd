"""Training augmentation, as the authors trained: shorter side resized to the training size, a random
square crop, a random horizontal flip; the mask follows the image and is binarised afterwards."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import binarize


def resize_shorter_side(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) -> (C, H', W') with min(H', W') = size, aspect ratio kept (bilinear, antialiased)."""
    height, width = tensor.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    return F.interpolate(tensor[None], size=new_size, mode="bilinear", antialias=True, align_corners=False)[0]


def augment(image: torch.Tensor, mask: torch.Tensor, size: int,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """image (3, H, W) in [-1, 1], mask (1, H, W) in [0, 1] -> (3, size, size), (1, size, size) binary."""
    if image.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"image {tuple(image.shape[-2:])} and mask {tuple(mask.shape[-2:])} differ in size")
    both = resize_shorter_side(torch.cat([image, mask]), size)  # resized together: they stay aligned
    height, width = both.shape[-2:]
    top = int(torch.randint(height - size + 1, (), generator=generator))
    left = int(torch.randint(width - size + 1, (), generator=generator))
    both = both[:, top:top + size, left:left + size]
    if float(torch.rand((), generator=generator)) < 0.5:
        both = both.flip(-1)
    return both[:3].clamp(-1, 1), binarize(both[3:])
