"""Image files <-> tensors. Images are (3, H, W) in [-1, 1]; masks (1, H, W) in [0, 1]."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def images_in(folder: Path) -> list[Path]:
    """The image files of a folder, sorted; hidden files (macOS' ._name.jpg) are not images."""
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file())


def open_image(path: str | Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the {what} {path} does not exist")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"cannot read the {what} {path}: not an image file, or a damaged one ({error})") from None
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (C, H, W) float in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def load_image(path: str | Path) -> torch.Tensor:
    """Any image file -> (3, H, W) in [-1, 1] (transparency is dropped)."""
    return to_tensor(open_image(path, "image").convert("RGB")) * 2 - 1


def load_mask(path: str | Path) -> torch.Tensor:
    """A mask file (white = object) -> (1, H, W) in [0, 1]; not binarised here."""
    return to_tensor(open_image(path, "mask").convert("L"))


def load_rgba_as_image_and_mask(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A cut-out: RGBA, alpha = object. An RGB image without alpha is taken to be the object on a
    plain backdrop, the backdrop being the colour of its corners."""
    image = open_image(path, "image")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = to_tensor(image.convert("RGBA"))
        return rgba[:3] * 2 - 1, rgba[3:]
    rgb = to_tensor(image.convert("RGB"))
    corners = torch.stack([rgb[:, 0, 0], rgb[:, 0, -1], rgb[:, -1, 0], rgb[:, -1, -1]])  # (4, 3)
    backdrop = corners.median(dim=0).values
    if (corners - backdrop).abs().max() > 0.05:
        raise ValueError(f"{path} has no alpha channel and no plain backdrop; give the object mask with --mask")
    mask = ((rgb - backdrop[:, None, None]).abs().amax(dim=0, keepdim=True) > 0.05).float()
    return rgb * 2 - 1, mask


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] -> (3, H, W) uint8 in [0, 255], rounded."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def mask_as_image(mask: torch.Tensor) -> torch.Tensor:
    """(..., 1, H, W) mask in [0, 1] -> (..., 3, H, W) in [-1, 1]: white where the mask is 1."""
    return (mask * 2 - 1).expand(*mask.shape[:-3], 3, *mask.shape[-2:])


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """(3, H, W) in [-1, 1] -> PNG."""
    Image.fromarray(to_uint8(image.cpu()).permute(1, 2, 0).numpy()).save(path)


def resize_shorter_side(images: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H', W') with min(H', W') = size, aspect ratio kept (antialiased)."""
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    return F.interpolate(images, size=new_size, mode=mode, antialias=True, align_corners=False)


def make_grid(images: list[torch.Tensor], columns: int, padding: int = 2) -> torch.Tensor:
    """Tile (3, H, W) images of one size into rows of `columns`, on a white canvas."""
    height, width = images[0].shape[-2:]
    rows = math.ceil(len(images) / columns)
    canvas = torch.ones(3, rows * (height + padding) + padding, columns * (width + padding) + padding)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        canvas[:, top:top + height, left:left + width] = image
    return canvas
