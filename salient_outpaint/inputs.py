"""Input refused alike wherever it arrives (the options, the pipeline, sample.py's batches, the app, the
training data): InputError, whose one-line message says what to change, the one check that a mask fits
its image, the one rule for a number's range (finite, within bounds), and how a message names an option
on the command line. Below every module that refuses input, so that each can raise it without importing
the others."""
from __future__ import annotations

import math

MAX_SEED = 2 ** 63 - 1  # the seeds every tool takes: [0, MAX_SEED]
# The largest --resolution, for sampling and training alike: 4x SD2's training side, 16x its pixels. Past
# it a photo's work would take many times the memory and hours on most machines, and the model, trained
# at 512, repeats itself.
MAX_RESOLUTION = 2048


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


def range_problem(value: float, at_least: float | None = None, at_most: float | None = None,
                  above: float | None = None, below: float | None = None) -> str | None:
    """The one rule for a number an option takes: finite and within its bounds. None when `value` is
    fine, else what the option "must ..." in words, e.g. "be a finite number in [0, 1)"; NaN and
    infinity are refused whatever the bounds (a NaN passes every comparison's negation)."""
    bounds = ([f">= {at_least:g}"] if at_least is not None else []) + ([f"> {above:g}"] if above is not None else []) \
        + ([f"<= {at_most:g}"] if at_most is not None else []) + ([f"< {below:g}"] if below is not None else [])
    wanted = "be a finite number" + (" " + " and ".join(bounds) if bounds else "")
    if not math.isfinite(value):
        return wanted
    if (at_least is not None and value < at_least) or (above is not None and value <= above) or \
            (at_most is not None and value > at_most) or (below is not None and value >= below):
        return "not be negative" if bounds == [">= 0"] else wanted
    return None


def check_number(name: str, value: float, **bounds: float) -> None:
    """Refuse `value` of the option named `name` (as the user sees it, e.g. --ema-decay) unless it is
    finite and within `bounds` (range_problem's at_least, at_most, above, below)."""
    problem = range_problem(value, **bounds)
    if problem:
        raise InputError(f"{name} must {problem}, got {value}")
