"""Handing freed memory back to the system.

Torch's CPU tensors live on the C heap. glibc keeps what a process frees for its next allocations
instead of returning it, and a heap whose free space is scattered between live blocks cannot shrink:
after a denoising loop the U-Net's freed activations stay resident under the decode that follows, and
a server keeps the peak of its largest request for good. `trim` asks glibc to return every free page
(malloc_trim); elsewhere (another C library, another system) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def c_library():
    """glibc's malloc_trim, or None where there is no such function."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def trim() -> None:
    malloc_trim = c_library()
    if malloc_trim is not None:
        malloc_trim(0)
