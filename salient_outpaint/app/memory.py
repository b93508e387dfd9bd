"""How much memory a request takes, and how much the server may use (app.py --max-memory): a request
the estimate puts over the limit is refused before any model runs, instead of being killed midway.

What grows with the photo is the full-size work, done image by image (photo.full_size):

    photo (3, H, W) + mask (1, H, W), float32         16 bytes a pixel
    one image's upscale and paste-back temporaries   about FULL_SIZE_WORK bytes a pixel, once
    each finished image kept as 8-bit RGB            3 bytes a pixel, num_images (x2 with compare)

so a request needs about pixels x (FULL_SIZE_WORK + 16 + 3 x images) bytes on top of the loaded
models; the sampling itself runs at the working size, the same for every photo. README.md gives the
measured peak of the largest request.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..inputs import InputError

FULL_SIZE_WORK = 80  # bytes a pixel: decoding, upscale, paste-back and PNG temporaries (README's measurement)
DEFAULT_FRACTION = 0.8  # of the machine's (or the container's) memory
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
GIB = 2 ** 30


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its container's limit when lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file in CGROUP_LIMITS:
        try:
            limit = limit_file.read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def default_max_memory() -> int:
    return int(DEFAULT_FRACTION * machine_memory())


def request_memory(height: int, width: int, num_images: int, compare: bool) -> int:
    """Bytes a request on a (height, width) photo takes beyond the loaded models (see the module's notes)."""
    results = num_images * (2 if compare else 1)
    return height * width * (FULL_SIZE_WORK + 16 + 3 * results)


def check_request_memory(height: int, width: int, num_images: int, compare: bool, max_memory: int) -> None:
    needed = request_memory(height, width, num_images, compare)
    if needed > max_memory:
        raise InputError(f"this request needs about {needed / GIB:.1f} GiB ({width} x {height} photo, {num_images} "
                         f"image(s){', compared' if compare else ''}) and this server allows {max_memory / GIB:.1f} "
                         "GiB: ask for fewer images, leave out compare, or upload a smaller photo")
