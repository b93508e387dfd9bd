"""Overlapping tiles over a map larger than a network's native size, blended with smooth weights.

    positions(length, tile, overlap)   tile starts along one axis, evenly spread, first at 0, last at the end
    blend_weights(size, overlap)       (h, w) weights rising linearly over `overlap` pixels from each edge
                                       (never 0: a pixel only one tile covers still counts)
    tiled(function, x, tile, overlap)  out = sum over tiles of weights * function(crop) / sum of weights

A network with spatial context (a U-Net, a VAE) sees each tile's edge as an edge of the world; where
tiles merely abut, each tile's edge shows as a seam. Overlapping tiles weighted down towards their
edges (MultiDiffusion) make every pixel mostly the work of a tile that sees it from inside.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def positions(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of `tile` pixels covering [0, length), neighbours sharing at least `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def blend_weights(height: int, width: int, overlap: int) -> torch.Tensor:
    """(h, w): 1 inside, falling linearly to 1 / (overlap + 1) at each edge."""
    def ramp(length: int) -> torch.Tensor:
        index = torch.arange(length, dtype=torch.float32)
        return ((torch.minimum(index, length - 1 - index) + 1) / (overlap + 1)).clamp(max=1)

    return ramp(height)[:, None] * ramp(width)[None, :]


def windows(height: int, width: int, tile: int, overlap: int) -> list[tuple[slice, slice]]:
    """The (rows, columns) of every tile over an (height, width) map."""
    return [(slice(top, top + min(tile, height)), slice(left, left + min(tile, width)))
            for top in positions(height, tile, overlap) for left in positions(width, tile, overlap)]


def tiled(function: Callable[[slice, slice], torch.Tensor], height: int, width: int, tile: int, overlap: int,
          scale: int = 1) -> torch.Tensor:
    """function(rows, columns) on every tile window of an (height, width) grid -> (..., C, height * scale,
    width * scale), the tiles' outputs (..., C, tile rows * scale, tile columns * scale) blended; `tile` and
    `overlap` count grid cells. A VAE decoder tiles its latents (scale f), its encoder the latent grid of
    its image (cropping f pixels per cell, scale 1); the tiled denoiser crops each input to the window."""
    total = weight_sum = None
    for rows, columns in windows(height, width, tile, overlap):
        out = function(rows, columns)
        if total is None:
            total = out.new_zeros(*out.shape[:-2], height * scale, width * scale)
            weight_sum = out.new_zeros(height * scale, width * scale)
        weight = blend_weights(*out.shape[-2:], overlap * scale).to(out)
        rows, columns = scaled(rows, scale), scaled(columns, scale)
        total[..., rows, columns] += weight * out
        weight_sum[rows, columns] += weight
    return total / weight_sum


def scaled(window: slice, factor: int) -> slice:
    """A window of grid cells as pixels, `factor` pixels per cell."""
    return slice(window.start * factor, window.stop * factor)
