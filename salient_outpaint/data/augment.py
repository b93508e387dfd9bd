"""Training augmentation, as the authors trained: the shorter side resized to the training size, a
random square crop, a random horizontal flip. Image and mask go through every step together (one
tensor), so the object stays exactly where its mask says; the mask is binarised at the end.

All randomness comes from the `generator` passed in: the datasets seed one per (seed, epoch, index),
so an item is the same tensors whenever, and on whichever process, it is read.
"""
from __future__ import annotations

import torch

from ..inputs import check_mask_size
from ..seeds import AUGMENTATION, stream_generator
from .images import resize_shorter_side
from .masks import binarize


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The RNG of one item of one epoch; distinct (seed, epoch, index) give distinct seeds."""
    return stream_generator(AUGMENTATION, seed, epoch, index)


def augment(image: torch.Tensor, mask: torch.Tensor, size: int,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """image (3, H, W) in [-1, 1], mask (1, H, W) in [0, 1] -> (3, size, size) in [-1, 1],
    (1, size, size) in {0, 1}."""
    check_mask_size(mask.shape[-2:], image.shape[-2:])
    both = resize_shorter_side(torch.cat([image, mask])[None], size, mode="bilinear")[0]  # (4, H', W')
    height, width = both.shape[-2:]
    top = int(torch.randint(height - size + 1, (), generator=generator))
    left = int(torch.randint(width - size + 1, (), generator=generator))
    both = both[:, top:top + size, left:left + size]  # (4, size, size)
    if float(torch.rand((), generator=generator)) < 0.5:
        both = both.flip(-1)
    return both[:3].clamp(-1, 1), binarize(both[3:])
