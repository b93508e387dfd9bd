"""The object mask as a red overlay a person can correct with a brush (or by clicking points on the
object for a segmenter), and the corrections read back.

The browser edits a copy at display size (longest side `DISPLAY_SIDE`); the mask used for
generation stays at the photo's full size, soft if the segmenter's is. Only the pixels the person
changed are taken from the edited copy (scaled back up), so an untouched mask keeps its full-resolution
edge.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import to_uint8
from ..data.masks import binarize

DISPLAY_SIDE = 512
OVERLAY_RGBA = (255, 0, 0, 128)  # half-transparent red over the object
POINT_RGB, POINT_RADIUS = (0, 255, 0), 4  # the clicked points, in display pixels


def display_size(height: int, width: int) -> tuple[int, int]:
    scale = DISPLAY_SIDE / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, H, W) in [0, 1] -> (1, h, w) binary, area-weighted so thin strokes survive a downscale."""
    resized = F.interpolate(mask[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return binarize(resized[0])


def editor_value(image: torch.Tensor, mask: torch.Tensor) -> dict:
    """image (3, H, W) in [-1, 1], mask (1, H, W) -> the ImageEditor's value: the photo as background,
    the mask as one red overlay layer, both (h, w[, 4]) uint8 at display size."""
    shown = shown_photo(image)
    background = to_uint8(shown).permute(1, 2, 0).numpy()  # (h, w, 3)
    return {"background": background, "layers": [overlay(resize_mask(mask, shown.shape[-2:]))], "composite": None}


def shown_photo(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] -> (3, h, w) at display size."""
    size = display_size(*image.shape[-2:])
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def clicker_view(image: torch.Tensor, mask: torch.Tensor, points: list[tuple[float, float]]) -> np.ndarray:
    """The photo to click points on: (h, w, 3) uint8 at display size, the mask blended in red, the
    points (x, y in the photo's pixels) as green dots."""
    shown = to_uint8(shown_photo(image)).permute(1, 2, 0).numpy().astype(np.float32)  # (h, w, 3)
    height, width = shown.shape[:2]
    alpha = overlay(resize_mask(mask, (height, width)))[..., 3:] / 255.0
    shown = shown * (1 - alpha) + np.array(OVERLAY_RGBA[:3], dtype=np.float32) * alpha
    rows, columns = np.mgrid[:height, :width]
    scale = width / image.shape[-1]
    for x, y in points:
        shown[(rows - y * scale) ** 2 + (columns - x * scale) ** 2 <= POINT_RADIUS ** 2] = POINT_RGB
    return shown.round().astype(np.uint8)


def photo_point(display_xy: tuple[int, int], photo_size: tuple[int, int]) -> tuple[float, float]:
    """A click (x, y) on the display-size photo -> (x, y) in the pixels of the photo, (H, W), inside it."""
    height, width = photo_size
    shown_height, shown_width = display_size(height, width)
    return display_xy[0] * width / shown_width, display_xy[1] * height / shown_height


def overlay(mask: torch.Tensor) -> np.ndarray:
    """(1, h, w) binary -> (h, w, 4) uint8: OVERLAY_RGBA where the object is, transparent elsewhere."""
    layer = np.zeros((*mask.shape[-2:], 4), dtype=np.uint8)
    layer[mask[0].numpy() > 0] = OVERLAY_RGBA
    return layer


def edited_mask(mask: torch.Tensor, layers: list[np.ndarray]) -> torch.Tensor:
    """The full-size mask (1, H, W) with the person's corrections applied.

    layers: the ImageEditor's layers, (h, w, 4) uint8; a pixel painted on any of them is object, an
    erased one background. Where the edit agrees with the mask as it was shown, the mask is kept."""
    height, width = mask.shape[-2:]
    if not layers:
        return mask
    painted = torch.from_numpy(np.any([layer[..., 3] > 0 for layer in layers], axis=0)).float()[None]  # (1, h, w)
    shown = resize_mask(mask, painted.shape[-2:])
    changed = resize_mask((painted != shown).float(), (height, width)).bool()
    return torch.where(changed, resize_mask(painted, (height, width)), mask)
