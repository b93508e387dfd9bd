"""The toy world's segmenter: its objects are regions of one colour from a known palette.

Pixels within `tolerance` (Euclidean distance in [-1, 1] RGB) of the object's colour are candidates;
the object is every candidate region (8-connected) that touches the prompt, so a same-coloured thing
elsewhere in the background is not taken for the object. The object's colour and the seeds:
  prompt mask    the median colour inside it (the generator keeps the object's pixels), seeds inside it;
                 how evaluation finds a grown object again
  prompt points  the median colour at the points, seeds the points
  prompt box     the box's centre as a point, and nothing outside the box
  no prompt      the palette of the toy world (data/synthetic.py: plain and striped shades of its
                 object colours, kept away from the backgrounds'); the largest palette region
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.masks import binarize
from ..data.synthetic import COLOURS
from .interface import SegmentPrompt, SegmenterError, check_image, check_prompt

SECOND_SHADE = 0.1  # the least share of the seed pixels that makes a second object colour
STRIPE_SHADE = 0.55  # the darker stripes of a striped toy object (data/synthetic.py render_scene)


def toy_palette() -> torch.Tensor:
    """(K, 3) the toy objects' colours in [-1, 1]: each colour plain and in its stripe shade."""
    colours = torch.tensor(list(COLOURS.values()))
    return torch.cat([colours, colours * STRIPE_SHADE]) * 2 - 1


class ColourSegmenter:
    def __init__(self, tolerance: float = 0.25):
        self.tolerance = tolerance

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, prompt: SegmentPrompt | None = None) -> torch.Tensor:
        check_image(image)
        prompt = check_prompt(prompt, image)
        height, width = image.shape[-2:]
        inside_box = torch.ones(height, width, dtype=torch.bool)
        seeds = torch.zeros(height, width, dtype=torch.bool)
        if prompt.mask is not None:
            seeds = binarize(prompt.mask[0]).bool()
        elif prompt.points or prompt.box is not None:
            points = list(prompt.points)
            if prompt.box is not None:
                x0, y0, x1, y1 = prompt.box
                points.append(((x0 + x1) / 2, (y0 + y1) / 2))
                inside_box = torch.zeros_like(inside_box)
                inside_box[int(y0):int(y1), int(x0):int(x1)] = True
            for x, y in points:
                seeds[int(y), int(x)] = True
        else:
            return self.largest_palette_region(image)
        colours = self.object_colours(image[:, seeds])  # (K, 3), K = 1 or 2
        distance = (image[None] - colours[:, :, None, None]).norm(dim=1).amin(dim=0)  # (H, W) to the nearest
        close_in_colour = (distance <= self.tolerance) & inside_box
        return regions_touching(close_in_colour & seeds, close_in_colour).float()[None]

    def object_colours(self, pixels: torch.Tensor) -> torch.Tensor:
        """(3, N) the pixels at the seeds -> (K, 3) the object's colours: their median, and, for a striped
        object, the median of the other shade (the seeds farther than `tolerance` from the first colour,
        when they are at least SECOND_SHADE of them). One colour alone follows one shade of the stripes and
        misses the rest of the object."""
        first = pixels.median(dim=1).values  # (3,)
        other = pixels[:, (pixels - first[:, None]).norm(dim=0) > self.tolerance]
        if other.shape[1] < SECOND_SHADE * pixels.shape[1]:
            return first[None]
        return torch.stack([first, other.median(dim=1).values])

    def largest_palette_region(self, image: torch.Tensor) -> torch.Tensor:
        palette = toy_palette().to(image)  # (K, 3)
        distance = (image[None] - palette[:, :, None, None]).norm(dim=1).amin(dim=0)  # (H, W) to the nearest
        in_palette = distance <= self.tolerance
        if not in_palette.any():
            raise SegmenterError("no toy-world object colour in this image; the colour segmenter only knows the "
                                 "toy world's palette: give a point, a box or a mask, or use another segmenter")
        labels = connected_regions(in_palette)
        sizes = torch.bincount(labels[in_palette])
        return (labels == sizes.argmax()).logical_and(in_palette).float()[None]


def regions_touching(seeds: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: the 8-connected regions of `allowed` that contain a seed pixel.

    A flood fill by repeated 3x3 dilation, each step kept inside `allowed`, until nothing changes.
    """
    region = (seeds & allowed).float()[None, None]  # (1, 1, H, W)
    allowed = allowed.float()[None, None]
    while True:
        grown = F.max_pool2d(region, kernel_size=3, stride=1, padding=1) * allowed
        if torch.equal(grown, region):
            return region[0, 0].bool()
        region = grown


def connected_regions(allowed: torch.Tensor) -> torch.Tensor:
    """(H, W) int64 label per pixel: the 8-connected regions of `allowed`, each labelled by its largest
    flat pixel index (propagated by repeated 3x3 max-pooling), 0 outside."""
    height, width = allowed.shape
    labels = torch.arange(1, height * width + 1, dtype=torch.float64).reshape(1, 1, height, width)
    mask = allowed.double()[None, None]
    labels = labels * mask
    while True:
        grown = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * mask
        if torch.equal(grown, labels):
            return labels[0, 0].long()
        labels = grown
