"""Image files are read as an image viewer shows them: EXIF orientation, bit depths, modes, first frames."""
import gc
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from salient_outpaint.data.images import load_image, load_mask, load_rgba_as_image_and_mask
from tests.conftest import pil, save_as_stored, scene


@pytest.mark.parametrize("orientation", [6, 8, 3])
@pytest.mark.parametrize("width, height", [(48, 48), (64, 40)])
def test_exif_rotated_photo_and_mask_line_up_and_read_upright(tmp_path, orientation, width, height):
    shown, shown_mask = scene(width, height)
    save_as_stored(shown, tmp_path / "photo.jpg", orientation, quality=95, subsampling=0)  # 4:4:4 colour
    save_as_stored(shown_mask, tmp_path / "mask.png", orientation)
    image, mask = load_image(tmp_path / "photo.jpg"), load_mask(tmp_path / "mask.png")
    assert image.shape == (3, height, width) and mask.shape == (1, height, width)
    assert torch.equal(mask, shown_mask.float() / 255)
    expected = shown.float() / 127.5 - 1
    assert (image - expected).abs().mean() < 0.03  # JPEG at quality 95
    red = (image[0] > 0.5) & (image[1] < -0.5)  # where the photo shows the object
    object_pixels = mask[0] > 0.5
    overlap = (red & object_pixels).sum() / (red | object_pixels).sum()
    assert overlap > 0.9  # not 1: JPEG blurs colour edges


def test_exif_rotated_cutout_finds_its_mask_upright(tmp_path):
    shown, shown_mask = scene(64, 40)
    save_as_stored(torch.cat([shown, shown_mask]), tmp_path / "cutout.png", 6)
    image, mask = load_rgba_as_image_and_mask(tmp_path / "cutout.png")
    assert image.shape == (3, 40, 64) and torch.equal(mask, shown_mask.float() / 255)


def write_png16(path, pixels: np.ndarray):
    """A 16-bit PNG written by hand (Pillow writes 16-bit greyscale only): (H, W, C) uint16, C = 1 or 3."""
    height, width, channels = pixels.shape
    rows = b"".join(b"\0" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {1: 0, 3: 2}[channels], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_reads_like_its_8_bit_version(tmp_path, channels):
    deep = np.random.default_rng(0).integers(0, 65536, size=(24, 32, channels), dtype=np.uint16)
    write_png16(tmp_path / "deep.png", deep)
    shallow = np.round(deep / 257).astype(np.uint8)
    pil(torch.from_numpy(shallow).permute(2, 0, 1)).save(tmp_path / "shallow.png")
    difference = (load_image(tmp_path / "deep.png") - load_image(tmp_path / "shallow.png")).abs().max() / 2
    assert difference <= 1 / 255 + 1e-6  # in [0, 1] units
    if channels == 1:
        difference = (load_mask(tmp_path / "deep.png") - load_mask(tmp_path / "shallow.png")).abs().max()
        assert difference <= 1 / 255 + 1e-6


def reference():
    """(3, H, W) uint8 with 4 colours, so that a palette holds it exactly."""
    image = torch.zeros(3, 16, 20, dtype=torch.uint8)
    for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 250)]):
        image[:, 4 * index:4 * index + 4] = torch.tensor(colour, dtype=torch.uint8)[:, None, None]
    return image


def grey(image):
    return image.float().mean(dim=0, keepdim=True).round().to(torch.uint8)


@pytest.mark.filterwarnings("error")  # e.g. Pillow's warning about palette transparency converted to RGB
@pytest.mark.parametrize("mode", ["L", "P", "P-transparency", "CMYK", "LA", "RGBA", "F"])
def test_every_mode_reads_as_its_rgb(tmp_path, mode):
    rgb = reference()
    expected = grey(rgb).expand(3, -1, -1) if mode in ("L", "LA", "F") else rgb
    picture = pil(rgb)
    if mode == "L":
        picture = pil(grey(rgb))
    elif mode.startswith("P"):
        picture = picture.quantize(colors=4)
        if mode == "P-transparency":
            picture.info["transparency"] = 0
    elif mode == "CMYK":
        picture = picture.convert("CMYK")
    elif mode == "LA":
        picture = Image.merge("LA", [pil(grey(rgb)), Image.new("L", picture.size, 128)])
    elif mode == "RGBA":
        picture.putalpha(128)
    elif mode == "F":  # a float TIFF: white is 1.0
        picture = Image.fromarray(grey(rgb)[0].numpy().astype(np.float32) / 255, mode="F")
    path = tmp_path / ("picture.tif" if mode in ("CMYK", "F") else "picture.png")
    picture.save(path)
    image = load_image(path)
    assert ((image + 1) * 127.5 - expected.float()).abs().max() < 0.51


def test_palette_with_transparency_gives_its_alpha_as_the_mask(tmp_path):
    picture = pil(reference()).quantize(colors=4)
    transparent = picture.getpixel((0, 0))
    picture.info["transparency"] = transparent
    picture.save(tmp_path / "cutout.png")
    _, mask = load_rgba_as_image_and_mask(tmp_path / "cutout.png")
    assert mask[0, :4].max() == 0 and mask[0, 4:].min() == 1  # the first colour fills the first 4 rows


@pytest.mark.filterwarnings("error")
def test_animated_file_gives_its_first_frame_and_says_so_once(tmp_path):
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="has 3 frames; using the first") as caught:
        image = load_image(tmp_path / "moving.gif")
    assert len(caught) == 1
    assert image[0].min() > 0.5 and image[1:].max() < -0.9
    gc.collect()  # an unclosed file would warn here (ResourceWarning, an error in this test)


@pytest.mark.filterwarnings("error")
def test_reading_leaves_no_file_open(tmp_path):
    shown, shown_mask = scene(32, 24)
    save_as_stored(shown, tmp_path / "photo.jpg", 6)
    pil(shown_mask).save(tmp_path / "mask.png")
    load_image(tmp_path / "photo.jpg"), load_mask(tmp_path / "mask.png")
    load_rgba_as_image_and_mask(tmp_path / "mask.png")
    gc.collect()


def test_the_data_check_compares_upright_sizes_from_the_header(tmp_path):
    """A phone JPEG stored turned (EXIF orientation 6) and its upright mask pass the data check; a
    mask the size of the stored pixels, which would not line up with the photo, is still refused."""
    from salient_outpaint.data.check import pair_problems

    upright = torch.zeros(3, 40, 24, dtype=torch.uint8)
    save_as_stored(upright, tmp_path / "photo.jpg", 6)
    pil(torch.zeros(1, 40, 24, dtype=torch.uint8)).save(tmp_path / "mask.png")
    pil(torch.zeros(1, 24, 40, dtype=torch.uint8)).save(tmp_path / "stored_size_mask.png")
    assert pair_problems(tmp_path / "photo.jpg", tmp_path / "mask.png") == []
    problems = pair_problems(tmp_path / "photo.jpg", tmp_path / "stored_size_mask.png")
    assert len(problems) == 1 and "the mask is 40x24 (width x height) but its image photo.jpg is 24x40" in problems[0]
