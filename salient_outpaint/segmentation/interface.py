"""What every segmenter is: (image, prompt) -> soft object map, and the prompt it may be given.

    segmenter(image (3, H, W) in [-1, 1], prompt: SegmentPrompt | None) -> (1, H, W) object map in [0, 1]

1 = object. The map may be soft (a salient-object detector's confidence, SAM's sigmoid of its logits)
or binary (the colour segmenter); its 0.5 contour is the segmenter's answer (`refine.py` cuts there).
A prompt says which object is meant, in the forms SAM reads: points on it, a box around it, or a
mask of it (how evaluation asks for the object again in a generated image). A segmenter that cannot
use a prompt form says so when given it, rather than quietly ignoring it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from ..data.masks import binarize


class SegmenterError(ValueError):
    """A segmenter that cannot be built or asked as requested; the message says what to do."""


@dataclass(frozen=True)
class SegmentPrompt:
    points: tuple[tuple[float, float], ...] = ()  # (x, y) pixels on the object
    box: tuple[float, float, float, float] | None = None  # (x0, y0, x1, y1) pixels around it
    mask: torch.Tensor | None = None  # (1, H, W) in [0, 1], the object as it was (evaluation)

    def is_empty(self) -> bool:
        return not self.points and self.box is None and self.mask is None


class Segmenter(Protocol):
    def __call__(self, image: torch.Tensor, prompt: SegmentPrompt | None = None) -> torch.Tensor:
        """image (3, H, W) in [-1, 1] -> (1, H, W) object map in [0, 1]."""


def check_image(image: torch.Tensor) -> None:
    if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
        raise SegmenterError(f"the image must be a (3, H, W) float tensor in [-1, 1], got dtype {image.dtype} "
                             f"and shape {tuple(image.shape)}")


def check_prompt(prompt: SegmentPrompt | None, image: torch.Tensor) -> SegmentPrompt:
    """The prompt (an empty one for None), its points, box and mask checked against the image's size."""
    prompt = prompt or SegmentPrompt()
    height, width = image.shape[-2:]
    for x, y in prompt.points:
        if not (0 <= x < width and 0 <= y < height):
            raise SegmenterError(f"the point ({x:g}, {y:g}) lies outside the {width} x {height} (W x H) image")
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise SegmenterError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not a box inside the {width} x {height} "
                                 "(W x H) image; give X0,Y0,X1,Y1 with X0 < X1 and Y0 < Y1")
    if prompt.mask is not None:
        if prompt.mask.shape != (1, height, width):
            raise SegmenterError(f"the prompt mask is {tuple(prompt.mask.shape)} but the image is "
                                 f"{tuple(image.shape)}; they must cover the same pixels, as (1, H, W)")
        if not binarize(prompt.mask).any():
            raise SegmenterError("the prompt mask is empty: there is no object to look for")
    return prompt
