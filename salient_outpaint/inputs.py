"""Input refused alike wherever it arrives (the options, the pipeline, sample.py's batches, the app, the
training data): InputError, whose one-line message says what to change, the one check that a mask fits
its image, and how a message names an option on the command line. Below every module that refuses input,
so that each can raise it without importing the others."""
from __future__ import annotations


def flag(field: str) -> str:
    """The command-line flag of an option's field: control_scale -> --control-scale."""
    return "--" + field.replace("_", "-")


class InputError(ValueError):
    """Input the pipeline cannot use; the message says what to change."""


def check_mask_size(mask_size: tuple[int, int], image_size: tuple[int, int], mask: str = "the mask",
                    image: str = "the image") -> None:
    """Refuse a mask that does not cover its image pixel for pixel. Sizes are (height, width), as a
    tensor's shape[-2:]; `mask` and `image` name the two in the message (e.g. with their paths)."""
    if tuple(mask_size) != tuple(image_size):
        (mask_height, mask_width), (image_height, image_width) = mask_size, image_size
        raise InputError(f"{mask} is {mask_width}x{mask_height} (width x height) but {image} is "
                         f"{image_width}x{image_height}; give a mask of the image's size")
