"""A photo of any size through a model that works at one size.

The networks were trained at one resolution (512 px for SD2-inpainting) and their cost grows with
the pixel count, so a 4000x3000 phone photo is not sampled at its own size:

    photo (3, H, W), object mask (1, H, W) --(antialiased resize)--> working size (h, w), about
        resolution^2 pixels, the photo's aspect ratio, sides multiples of 8
    working image + mask --(pipeline.py)--> (N, 3, h, w) new backgrounds
    --(bicubic resize)--> (N, 3, H, W), and the photo's own object pixels pasted back over them
        with a feathered edge: the object stays pixel for pixel the photo's, only its rim blends.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data.masks import feather_weight
from .inputs import check_mask_size
from .options import SamplingOptions
from .pipeline import OutpaintPipeline


# The largest --resolution: 4x SD2's training side; 16x its pixels. Past it a photo's work would take
# many times the memory and hours on most machines, and the model, trained at 512, repeats itself.
MAX_RESOLUTION = 2048


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
                   progress: bool = False) -> torch.Tensor:
    """image (3, H, W) in [-1, 1], object_mask (1, H, W) in [0, 1] (1 = object, may be soft)
    -> (num_images, 3, H, W) in [-1, 1] with the object composited back, or with `raw` the model's
    own output at the working size (num_images, 3, h, w).

    `resolution` (default: the model's training size, config.image_size) sets the working area; at most
    MAX_RESOLUTION."""
    check_mask_size(object_mask.shape[-2:], image.shape[-2:])
    height, width = image.shape[-2:]
    size = working_size(height, width, resolution or pipeline.models.config.image_size)
    working_image = resize(image, size, "bicubic").clamp(-1, 1)  # bicubic overshoots at edges
    working_mask = resize(object_mask, size, "bilinear")  # soft along the edge; the pipeline decides
    generated = pipeline(working_image, working_mask, prompt, negative_prompt, num_images, options, generator,
                         progress=progress)  # (N, 3, h, w)
    if raw:
        return generated
    full = torch.empty(len(generated), 3, height, width, dtype=image.dtype)  # filled one by one: see full_size
    for index, one in enumerate(generated):
        full[index] = full_size(one, image, object_mask, options.feather)
    return full


def full_size(generated: torch.Tensor, image: torch.Tensor, object_mask: torch.Tensor, feather: int) -> torch.Tensor:
    """One result at the working size (3, h, w) -> (3, H, W) at the photo's size, the photo's own object
    pixels pasted back with a `feather`-pixel edge. One image at a time: at 40 megapixels an image is
    480 MB in float32 and the paste-back's temporaries are several of those, so the full-size work of
    eight at once would take gigabytes."""
    height, width = image.shape[-2:]
    upscaled = resize(generated, (height, width), "bicubic").clamp(-1, 1)  # (3, H, W), a new tensor
    # The generated edge is `feather` pixels wide at the working size; as wide at full size.
    feather = max(feather, round(feather * height / generated.shape[-2]))
    # data.masks.feathered_paste's weight * original + (1 - weight) * generated, bit for bit (addition
    # commutes), with one (3, H, W) temporary instead of three.
    weight = feather_weight(object_mask, feather)  # (1, H, W)
    return upscaled.mul_(1 - weight).add_(weight * image)
