"""A photo of any size through a model that works at one size.

The networks were trained at one resolution (512 px for SD2-inpainting) and their cost grows with
the pixel count, so a 4000x3000 phone photo is not sampled at its own size:

    photo (3, H, W), object mask (1, H, W) --(antialiased resize)--> working size (h, w), about
        resolution^2 pixels, the photo's aspect ratio, sides multiples of 8
    working image + mask --(pipeline.py)--> (N, 3, h, w) new backgrounds
    --(composite.py: the object's working-size rendition removed, bicubic resize)--> (N, 3, H, W),
        and the photo's own object composited over them with its own full-size mask: a soft matte
        stays soft, a binary one blends over at most `options.feather` pixels (2) inside its edge.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .composite import composite
from .hires import HiresOptions, hires_size, pass_sizes, refine
from .inputs import check_mask_size
from .options import SamplingOptions
from .pipeline import OutpaintPipeline


def working_size(height: int, width: int, area_side: int) -> tuple[int, int]:
    """(h, w) with about area_side^2 pixels and the aspect ratio of (height, width); sides are
    multiples of 8 (the latent grid of SD's VAE) and at least 8."""
    scale = area_side / math.sqrt(height * width)
    return max(8, round(height * scale / 8) * 8), max(8, round(width * scale / 8) * 8)


def resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(..., C, H, W) -> (..., C, h, w), antialiased when shrinking; unchanged at its own size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    batch = images.reshape(-1, *images.shape[-3:])
    resized = F.interpolate(batch, size=size, mode=mode, antialias=True, align_corners=False)
    return resized.reshape(*images.shape[:-2], *size)


def outpaint_photo(pipeline: OutpaintPipeline, image: torch.Tensor, object_mask: torch.Tensor, prompt: str,
                   negative_prompt: str = "", num_images: int = 1, options: SamplingOptions = SamplingOptions(),
                   generator: torch.Generator | None = None, resolution: int | None = None, raw: bool = False,
                   progress: bool = False, hires: HiresOptions | None = None) -> torch.Tensor:
    """image (3, H, W) in [-1, 1], object_mask (1, H, W) in [0, 1] (1 = object, may be soft)
    -> (num_images, 3, H, W) in [-1, 1] with the object composited back, or with `raw` the model's
    own output at the working size (num_images, 3, h, w).

    `resolution` (default: the model's training size, config.image_size, at most inputs.MAX_RESOLUTION) sets the
    working area. With `hires`, the result is painted again in tiles toward the photo's size first
    (hires.py). The full-size work is done image by image (composite.py)."""
    generated, working_mask = paint(pipeline, image, object_mask, prompt, negative_prompt, num_images, options,
                                    generator, resolution, progress, None if raw else hires)
    if raw:
        return generated
    return composite(generated, working_mask, image, object_mask, options.feather)  # (N, 3, H, W)


def paint(pipeline: OutpaintPipeline, image: torch.Tensor, object_mask: torch.Tensor, prompt: str,
          negative_prompt: str = "", num_images: int = 1, options: SamplingOptions = SamplingOptions(),
          generator: torch.Generator | None = None, resolution: int | None = None, progress: bool = False,
          hires: HiresOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's part of outpaint_photo: -> (generated (N, 3, h, w), the mask at that size (1, h, w)),
    at the working size, or with `hires` at the refined size; composite.composite takes them to the
    photo's size (the app does so one image at a time, straight to 8 bits)."""
    check_mask_size(object_mask.shape[-2:], image.shape[-2:])
    height, width = image.shape[-2:]
    size = working_size(height, width, resolution or pipeline.models.config.image_size)
    working_image = resize(image, size, "bicubic").clamp(-1, 1)  # bicubic overshoots at edges
    working_mask = resize(object_mask, size, "bilinear")  # soft along the edge; the pipeline decides
    generated = pipeline(working_image, working_mask, prompt, negative_prompt, num_images, options, generator,
                         progress=progress)  # (N, 3, h, w)
    if hires is not None:
        for larger in pass_sizes(size, hires_size(height, width, hires.hires_size), hires.hires_passes):
            larger_mask = resize(object_mask, larger, "bilinear").clamp(0, 1)
            generated = refine(pipeline, generated, working_mask, resize(image, larger, "bicubic").clamp(-1, 1),
                               larger_mask, prompt, negative_prompt, options, hires, larger, generator,
                               progress)  # (N, 3, H', W')
            working_mask = larger_mask  # the mask of the image composited now
    return generated, working_mask
