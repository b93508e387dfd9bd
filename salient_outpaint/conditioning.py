"""How an object photo and its mask become what SI2 and the ControlNet read.

Three masks meet here, and mixing them up is the classic bug:
  object_mask  1 = the salient object (what salient-object datasets ship)
  paint_mask   1 = the region the inpainting model paints (= 1 - object_mask when outpainting)
  control      the paint mask as a 3-channel image in [0, 1] (white = background to paint),
               the ControlNet's input in the authors' release; or, an ablation, the masked object
               image (see config.CONTROL_IMAGES)
Masks may be soft, as a salient-object detector's map is. As in the authors' notebook, the soft map
reaches the ControlNet as it is, while the U-Net's mask channel and the masked image read it binarised
at 0.5 (paint where paint_mask >= 0.5), as SD inpainting was trained. Binary masks pass both unchanged.
Training and sampling both build their inputs with these functions, so they cannot disagree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import CONTROL_IMAGES


def paint_mask_from_object(object_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) object mask -> (B, 1, H, W) mask of the background to paint."""
    return 1.0 - object_mask


def binary_paint_mask(paint_mask: torch.Tensor) -> torch.Tensor:
    """What the U-Net reads of a possibly soft paint mask: 1 where paint_mask >= 0.5, else 0."""
    return (paint_mask >= 0.5).to(paint_mask.dtype)


def masked_image(image: torch.Tensor, paint_mask: torch.Tensor) -> torch.Tensor:
    """Blank (set to 0, mid-grey in [-1, 1]) the region to paint, as SD inpainting was trained."""
    return image * (paint_mask < 0.5)  # the complement of binary_paint_mask, as a bool: keeps image's dtype


def control_image(paint_mask: torch.Tensor, image: torch.Tensor, kind: str = "paint_mask") -> torch.Tensor:
    """(B, 1, H, W) paint mask, soft or binary, (B, 3, H, W) image in [-1, 1] -> (B, 3, H, W) control image
    in [0, 1]: the paint mask as RGB, kept soft ("paint_mask"), or the image with the region to paint
    blanked to mid-grey, the masked image SI2 reads, in [0, 1] ("masked_object")."""
    if kind == "paint_mask":
        return paint_mask.expand(-1, 3, -1, -1)
    if kind == "masked_object":
        return (masked_image(image, paint_mask) + 1.0) / 2.0
    raise ValueError(f"unknown control image {kind!r}; choose one of {', '.join(CONTROL_IMAGES)}")


def latent_mask(paint_mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """The binarised paint mask at latent resolution, nearest-neighbour as in the SD inpainting pipeline."""
    return F.interpolate(binary_paint_mask(paint_mask), size=latent_size, mode="nearest")


def unet_input(noisy_latents: torch.Tensor, mask_latent: torch.Tensor,
               masked_image_latents: torch.Tensor) -> torch.Tensor:
    """The 9 channels SI2 reads: (B, 4) noisy latents + (B, 1) mask + (B, 4) masked-image latents."""
    return torch.cat([noisy_latents, mask_latent, masked_image_latents], dim=1)


def network_input(unet_input: torch.Tensor, in_channels: int) -> torch.Tensor:
    """What a network reads of those 9 channels: all (SI2, the paper's ControlNet), or the first 4,
    the noisy latents alone (a text-to-image U-Net or ControlNet)."""
    return unet_input[:, :in_channels]
