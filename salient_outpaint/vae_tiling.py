"""The VAE at bounded memory: an exact decode in strips, and overlapping tiles for large images.

A decode's activations dwarf its latents: SD2's decoder turns (1, 4, 64, 64) into a 512 px image
through (1, 512, 256, 256) and (1, 256, 512, 512) maps, and each residual block holds several such
maps at once (its input, the normalised input, the activation, the convolution's output, the sum).

Exact, at or below the native size (`decode_in_strips`): the middle block runs whole (at the latent
size it is small, and its attention sees every pixel), the up blocks layer by layer in horizontal
strips, one image at a time. Every operation but GroupNorm is local (3x3 convolutions: one row of
context each side), so a strip with one row of halo gives the same rows as the whole map; GroupNorm's
statistics are taken over the whole map first (in float64), then applied strip by strip as one scale
and shift per channel. What is held at once: a residual block's input map (its output is written over
it), its hidden map, and one strip's temporaries.

Approximate, above it (`decode_tiled`, `encode_tiled`, used by --hires): overlapping tiles of the
native size, blended with smooth weights (tiles.py); each tile's GroupNorm sees its own statistics, so
tiles differ slightly where they meet, and the blending spreads that difference over the overlap.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .modules.layers import ResnetBlock
from .modules.vae import AutoencoderKL, VAEBlock
from .tiles import scaled, tiled

STRIP_PIXELS = 2 ** 14  # pixels (rows x columns) per strip at an up block's resolution: 32 rows of 512 at 512 px
STATISTICS_CHUNK = 2 ** 14  # values per group summed at once in float64
HALO = 1  # rows of context each 3x3 convolution needs on each side


def group_statistics(x: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> mean and variance per (B, groups) over the whole map, summed in float64 a chunk at a
    time (a float64 copy of the map would double what the strips save)."""
    grouped = x.reshape(x.shape[0], groups, -1)  # (B, G, C / G * H * W)
    chunks = grouped.split(STATISTICS_CHUNK, dim=-1)
    mean = sum(chunk.double().sum(-1) for chunk in chunks) / grouped.shape[-1]
    squares = sum(((chunk.double() - mean[..., None]) ** 2).sum(-1) for chunk in chunks)
    return mean, squares / grouped.shape[-1]


def affine(norm: torch.nn.GroupNorm, statistics: tuple[torch.Tensor, torch.Tensor],
           dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """GroupNorm with the whole map's (mean, variance) as one scale and shift per channel, each (C, 1, 1):
    (x - mean) / std * weight + bias = x * scale + shift. Batch 1 (the decode runs image by image)."""
    mean, variance = (value[0].repeat_interleave(norm.num_channels // norm.num_groups) for value in statistics)
    scale = (variance + norm.eps).rsqrt() * norm.weight.double()
    shift = norm.bias.double() - mean * scale
    return scale.to(dtype)[:, None, None], shift.to(dtype)[:, None, None]


def activated(strip: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """silu(GroupNorm(strip)) in one new tensor the size of the strip."""
    scale, shift = scale_shift
    return F.silu(torch.addcmul(shift, strip, scale), inplace=True)


def strips(height: int, pixels_per_row: int) -> Iterator[tuple[int, int, int, int]]:
    """(top, bottom, low, high) of each horizontal strip of a map `height` rows high: its rows, STRIP_PIXELS
    at a time, and those rows with HALO rows of context on each side."""
    rows = max(1, STRIP_PIXELS // pixels_per_row)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        yield top, bottom, max(0, top - HALO), min(height, bottom + HALO)


def in_strips(function, inputs: list[torch.Tensor], out_channels: int, scale: int = 1) -> torch.Tensor:
    """function(*strips) on horizontal strips of `inputs` (each (1, C_k, H, W)) with HALO rows of context,
    -> (1, out_channels, H * scale, W * scale), each strip's halo cropped away."""
    _, _, height, width = inputs[0].shape
    out = inputs[0].new_empty(1, out_channels, height * scale, width * scale)
    for top, bottom, low, high in strips(height, width * scale * scale):
        result = function(*(x[:, :, low:high] for x in inputs))
        out[:, :, top * scale:bottom * scale] = result[:, :, (top - low) * scale:(bottom - low) * scale]
    return out


def resnet_in_strips(block: ResnetBlock, x: torch.Tensor) -> torch.Tensor:
    """ResnetBlock.forward without a time embedding, strip by strip (same result up to rounding), for one
    image. x is consumed: the output is written over it, in its first out_channels channels, since a strip
    of the output needs x's rows of that strip alone (the skip is pointwise; the convolution that needs
    context reads the hidden map)."""
    first = affine(block.norm1, group_statistics(x, block.norm1.num_groups), x.dtype)
    hidden = in_strips(lambda strip: block.conv1(activated(strip, first)), [x], block.conv1.out_channels)
    second = affine(block.norm2, group_statistics(hidden, block.norm2.num_groups), x.dtype)
    out = x[:, :block.conv2.out_channels]  # (1, C_out, H, W): contiguous, over x's storage
    for top, bottom, low, high in strips(*x.shape[-2:]):
        strip = x[:, :, top:bottom]
        shortcut = block.conv_shortcut(strip) if hasattr(block, "conv_shortcut") else strip
        residual = block.conv2(activated(hidden[:, :, low:high], second))[:, :, top - low:bottom - low]
        out[:, :, top:bottom] = shortcut + residual  # rows of x no later strip reads
    return out


def up_block_in_strips(block: VAEBlock, x: torch.Tensor) -> torch.Tensor:
    for resnet in block.resnets:
        x = resnet_in_strips(resnet, x)
    if hasattr(block, "upsamplers"):
        conv = block.upsamplers[0].conv
        x = in_strips(lambda strip: conv(F.interpolate(strip, scale_factor=2.0, mode="nearest")), [x],
                      conv.out_channels, scale=2)  # nearest 2x then 3x3: one input row of context
    return x


@torch.no_grad()
def decode_in_strips(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Unscaled latents (B, 4, h, w) -> image (B, 3, h * f, w * f): vae.decode's result (within float
    rounding: 1e-4), image by image, holding far less at once."""
    decoder, factor = vae.decoder, vae.config.downsample_factor
    images = latents.new_empty(len(latents), decoder.conv_out.out_channels, latents.shape[-2] * factor,
                               latents.shape[-1] * factor)
    for index, latent in enumerate(latents.split(1)):
        x = decoder.mid_block(decoder.conv_in(vae.post_quant_conv(latent)))  # (1, C_last, h, w), whole
        for block in decoder.up_blocks:
            x = up_block_in_strips(block, x)
        last = affine(decoder.conv_norm_out, group_statistics(x, decoder.conv_norm_out.num_groups), x.dtype)
        images[index] = in_strips(lambda strip: decoder.conv_out(activated(strip, last)), [x],
                                  decoder.conv_out.out_channels)[0]
    return images


def decode(vae: AutoencoderKL, latents: torch.Tensor, native: int) -> torch.Tensor:
    """Unscaled latents -> images: exact in strips up to `native` latent pixels a side (the model's size),
    in overlapping tiles of that size beyond (approximate, seamless)."""
    if max(latents.shape[-2:]) <= native:
        return decode_in_strips(vae, latents)
    factor = vae.config.downsample_factor
    return tiled(lambda rows, columns: decode_in_strips(vae, latents[..., rows, columns]), *latents.shape[-2:],
                 native, native // 4, scale=factor)


@torch.no_grad()
def encode_tiled(vae: AutoencoderKL, image: torch.Tensor, native: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1], sides multiples of f -> the posterior mean (B, 4, H / f, W / f), unscaled,
    encoded in overlapping tiles of `native` latent pixels a side (approximate beyond the native size)."""
    factor = vae.config.downsample_factor
    return tiled(lambda rows, columns: vae.encode(image[..., scaled(rows, factor), scaled(columns, factor)]).mean,
                 image.shape[-2] // factor, image.shape[-1] // factor, native, native // 4)
