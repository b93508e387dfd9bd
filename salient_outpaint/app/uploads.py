"""Uploaded files -> tensors, refused with one line a person can act on when they cannot be used.

An upload is checked from its header before it is decoded: a file that is not an image, or one
with more pixels than the server allows, never reaches the decoder (a 30000 x 30000 PNG of a few
kilobytes would otherwise take gigabytes).
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..data.images import NoMaskInImage, load_image, load_mask, load_rgba_as_image_and_mask
from ..errors import InputError

DEFAULT_MAX_PIXELS = 40_000_000  # a 48-megapixel phone's default 12 MP mode, and a 6000 x 6000 scan, fit


def check_upload(path: str | Path, what: str, max_pixels: int) -> None:
    """Refuse a file that is not an image, or one larger than `max_pixels`, from its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        raise InputError(f"the {what} is not an image PIL can read (PNG, JPEG, WebP, ...); "
                         "upload an image file") from None
    except Image.DecompressionBombError:
        width, height = max_pixels + 1, 1  # PIL refused it for its size: report it as too large
    if width * height > max_pixels:
        raise InputError(f"the {what} is {width} x {height} = {width * height / 1e6:.1f} megapixels; this server "
                         f"takes at most {max_pixels / 1e6:.1f}: downscale it first")


def read_photo(path: str | Path, max_pixels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A photo or RGBA cut-out -> image (3, H, W) in [-1, 1], and the object mask (1, H, W) in [0, 1]
    that the file itself gives (its alpha, or the object on a plain backdrop), else None."""
    check_upload(path, "photo", max_pixels)
    try:
        return load_rgba_as_image_and_mask(path)
    except NoMaskInImage:  # no alpha and no plain backdrop: the mask has to come from elsewhere
        return load_image(path), None
    except ValueError:
        raise InputError("the photo is damaged: its header reads but its pixels do not decode") from None


def read_mask(path: str | Path, image: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """An uploaded mask (white = object) for `image` (3, H, W) -> (1, H, W) in [0, 1]."""
    check_upload(path, "mask", max_pixels)
    try:
        mask = load_mask(path)
    except ValueError:
        raise InputError("the mask is damaged: its header reads but its pixels do not decode") from None
    if mask.shape[-2:] != image.shape[-2:]:
        raise InputError(f"the mask is {mask.shape[-1]} x {mask.shape[-2]} but the photo is "
                         f"{image.shape[-1]} x {image.shape[-2]} (width x height); upload a mask of the photo's size")
    return mask
