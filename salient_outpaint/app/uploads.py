"""Uploaded files -> tensors, refused with one line a person can act on when they cannot be used.

An upload is checked from its header before it is decoded: a file that is not an image, or one
with more pixels than the server allows, never reaches the decoder (a 30000 x 30000 PNG of a few
kilobytes would otherwise take gigabytes).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.images import (DEFAULT_MAX_PIXELS, NoMaskInImage, check_pixels, load_image, load_mask,
                           load_rgba_as_image_and_mask)
from ..inputs import InputError, check_mask_size

__all__ = ["DEFAULT_MAX_PIXELS", "check_upload", "read_mask", "read_photo"]


def check_upload(path: str | Path, what: str, max_pixels: int) -> None:
    """Refuse a file that is not an image, or one larger than `max_pixels`, from its header alone."""
    check_pixels(path, what, max_pixels, allowed_by="this server")


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
    check_mask_size(mask.shape[-2:], image.shape[-2:], image="the photo")
    return mask
