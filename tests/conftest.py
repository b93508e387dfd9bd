"""Helpers and fixtures that more than one test module uses."""
import torch
from PIL import Image


def write_pair(images, masks, name, size=(48, 40), suffix=".jpg"):
    """A red square object on blue, off-centre (so a flip moves it), and its mask."""
    width, height = size
    image = Image.new("RGB", size, (0, 0, 255))
    mask = Image.new("L", size, 0)
    box = (width // 4, height // 4, width // 4 + 12, height // 4 + 12)
    image.paste((255, 0, 0), box)
    mask.paste(255, box)
    image.save(images / f"{name}{suffix}", quality=100)
    mask.save(masks / f"{name}.png")


def salient_folder(root, count=4, images="images", masks="masks"):
    """A salient-object folder (images/ + masks/) of `count` pairs from `write_pair`, named img0, img1, ..."""
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    for index in range(count):
        write_pair(root / images, root / masks, f"img{index}")
    return root


ORIENTATION = 0x0112
# EXIF orientation -> how the stored pixels are turned to be shown (torch.rot90's k: quarter turns
# counter-clockwise). 6: the camera was held upright, the sensor stored the scene turned left.
SHOWN_BY_QUARTER_TURNS = {6: -1, 8: 1, 3: 2}


def scene(width, height):
    """(3, H, W) uint8: a red object in the top-left quarter on a blue-green gradient, and its (1, H, W) mask."""
    rows = torch.linspace(0, 255, height)[:, None].expand(height, width)
    image = torch.stack([torch.zeros(height, width), rows, 255 - rows]).round().to(torch.uint8)
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    top, left = height // 8, width // 8
    image[:, top:height // 2, left:width // 2] = torch.tensor([230, 20, 20], dtype=torch.uint8)[:, None, None]
    mask[:, top:height // 2, left:width // 2] = 255
    return image, mask


def pil(tensor):
    """(C, H, W) uint8, C = 1 or 3 (or 4) -> a PIL image of the same pixels."""
    array = tensor.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def save_as_stored(tensor, path, orientation, **options):
    """Store `tensor` (what a viewer must show) as a camera would: pixels turned, orientation in EXIF."""
    stored = torch.rot90(tensor, -SHOWN_BY_QUARTER_TURNS[orientation], dims=(1, 2))
    image = pil(stored)
    exif = image.getexif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes(), **options)
