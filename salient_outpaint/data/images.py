"""Image files <-> tensors. Images are (3, H, W) in [-1, 1]; masks (1, H, W) in [0, 1].

Files are read as an image viewer shows them: the EXIF orientation of a phone photo is applied,
an animated file gives its first frame, 16-bit and float pixels are scaled to their own range.
"""
from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ..files import atomic_write
from ..inputs import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# Single-channel modes whose pixels are not bytes, and the value that stands for white in each.
# Pillow reads a 16-bit greyscale PNG or TIFF as I;16 (or I), a float TIFF as F (white = 1.0).
WHITE_OF_DEEP_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
EXIF_ORIENTATION = 0x0112
# The largest photo sample.py and the app decode (--max-pixels): a 48-megapixel phone's default 12 MP
# mode and a 6000 x 6000 scan fit. Its full-size work is done image by image (photo.py); see README.md
# for the memory it takes.
DEFAULT_MAX_PIXELS = 40_000_000


def images_in(folder: Path) -> list[Path]:
    """The image files of a folder, sorted; hidden files (macOS' ._name.jpg) are not images."""
    return sorted(path for path in folder.iterdir()
                  if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file())


def open_image(source: str | Path | bytes, what: str) -> Image.Image:
    """The picture in an image file (a path, or its bytes, e.g. a tar shard's member) as a viewer shows
    it: the first frame, turned upright by its EXIF orientation. The file is closed on return."""
    if isinstance(source, bytes):
        name, opened = f"({len(source)} bytes)", io.BytesIO(source)
    else:
        name = opened = Path(source)
        if not opened.is_file():
            raise FileNotFoundError(f"the {what} {opened} does not exist")
    try:
        with Image.open(opened) as file:
            frames = getattr(file, "n_frames", 1)
            file.load()  # the first frame: a file opens on it
            image = ImageOps.exif_transpose(file)  # a new, upright image (a plain copy without EXIF orientation)
    except Image.DecompressionBombError:
        raise InputError(f"the {what} {name} is too large: more than the {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} "
                         "megapixels Pillow decodes; downscale it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read the {what} {name}: not an image file, or a damaged one ({error})") from None
    if frames > 1:
        warnings.warn(f"the {what} {name} has {frames} frames; using the first", stacklevel=3)
    return image


def upright_size(file: Image.Image) -> tuple[int, int]:
    """(width, height) as open_image gives it, from an opened file's header alone (nothing decoded):
    EXIF orientations 5 to 8 turn the picture a quarter."""
    width, height = file.size
    return (height, width) if file.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8) else (width, height)


def check_max_pixels(max_pixels: int) -> None:
    """The --max-pixels flag (sample.py, app.py): at least one pixel."""
    if max_pixels < 1:
        raise ValueError(f"--max-pixels must be at least 1, got {max_pixels}")


def check_pixels(path: str | Path, what: str, max_pixels: int, allowed_by: str = "--max-pixels") -> None:
    """Refuse an image file with more than `max_pixels` pixels from its header alone, before anything is
    decoded (a 13000 x 13000 PNG of half a megabyte decodes to gigabytes). A file that is not an image
    is refused too; Pillow's own size limit is lifted for the header, so that a huge file is called
    huge, with its size, and not damaged."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as file:
            width, height = upright_size(file)
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise InputError(f"cannot read the {what}: not an image file (PNG, JPEG, WebP, ...), or a damaged one") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if width * height > max_pixels:
        raise InputError(f"the {what} is {width} x {height} = {width * height / 1e6:.1f} megapixels; {allowed_by} "
                         f"takes at most {max_pixels / 1e6:.1f}: downscale it first")


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> (C, H, W) float in [0, 1]; 16-bit and float pixels are scaled by their own white."""
    white = WHITE_OF_DEEP_MODES.get(image.mode, 255)
    array = np.asarray(image).astype(np.float32) / np.float32(white)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).clamp(0, 1)


def rgb_of(image: Image.Image) -> torch.Tensor:
    """(3, H, W) in [0, 1] of any mode: greyscale (8, 16 bit, float) is repeated, palette and CMYK
    converted, transparency dropped."""
    if image.mode in WHITE_OF_DEEP_MODES:
        return to_tensor(image).expand(3, -1, -1).contiguous()
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes straight to RGB
    return to_tensor(image.convert("RGB"))


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def load_image(path: str | Path) -> torch.Tensor:
    """Any image file -> (3, H, W) in [-1, 1] (transparency is dropped)."""
    return rgb_of(open_image(path, "image")) * 2 - 1


def mask_of(image: Image.Image) -> torch.Tensor:
    """(1, H, W) in [0, 1] of any mode (white = object), 16-bit and float masks at their full depth."""
    return to_tensor(image if image.mode in WHITE_OF_DEEP_MODES else image.convert("L"))


def load_mask(path: str | Path) -> torch.Tensor:
    """A mask file (white = object) -> (1, H, W) in [0, 1]; not binarised here."""
    return mask_of(open_image(path, "mask"))


class NoMaskInImage(ValueError):
    """An RGB photo with neither alpha nor a plain backdrop: its mask must come from elsewhere."""


def load_rgba_as_image_and_mask(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A cut-out: RGBA, alpha = object. An RGB image without alpha is taken to be the object on a
    plain backdrop, the backdrop being the colour of its corners."""
    image = open_image(path, "image")
    if has_alpha(image):
        rgba = to_tensor(image.convert("RGBA"))
        return rgba[:3] * 2 - 1, rgba[3:].clone()  # a view would keep all four channels alive
    rgb = rgb_of(image)
    corners = torch.stack([rgb[:, 0, 0], rgb[:, 0, -1], rgb[:, -1, 0], rgb[:, -1, -1]])  # (4, 3)
    backdrop = corners.median(dim=0).values
    if (corners - backdrop).abs().max() > 0.05:
        raise NoMaskInImage(f"{path} has no alpha channel and no plain backdrop; give the object mask with --mask")
    mask = ((rgb - backdrop[:, None, None]).abs().amax(dim=0, keepdim=True) > 0.05).float()
    return rgb * 2 - 1, mask


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) in [-1, 1] -> (3, H, W) uint8 in [0, 255], rounded."""
    return ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def mask_as_image(mask: torch.Tensor) -> torch.Tensor:
    """(..., 1, H, W) mask in [0, 1] -> (..., 3, H, W) in [-1, 1]: white where the mask is 1."""
    return (mask * 2 - 1).expand(*mask.shape[:-3], 3, *mask.shape[-2:])


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """(3, H, W) in [-1, 1] -> PNG. Written whole or not at all: a crash mid-write leaves no half file
    that a resumed run would take for a finished one."""
    pixels = Image.fromarray(to_uint8(image.cpu()).permute(1, 2, 0).numpy())
    atomic_write(path, lambda temporary: pixels.save(temporary, format="PNG"))


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
