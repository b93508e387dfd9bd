"""Full-size photos: painted at the working size, returned at their own size with their own object pixels."""
import math

import pytest
import torch
import torch.nn.functional as F

import sample as sample_cli
from salient_outpaint.composite import composite
from salient_outpaint.data.images import load_image, load_mask, to_uint8
from salient_outpaint.data.masks import binarize, erode
from salient_outpaint.evaluation.expansion import object_expansion
from salient_outpaint.loading import load_models
from salient_outpaint.photo import outpaint_photo, resize, working_size
from salient_outpaint.segmentation import SegmentPrompt
from salient_outpaint.segmentation.colour import ColourSegmenter
from salient_outpaint.inputs import InputError
from salient_outpaint.options import SamplingOptions
from salient_outpaint.pipeline import OutpaintPipeline
from tests.conftest import save_as_stored, scene

FAST = SamplingOptions(steps=2, guidance=3.0)


@pytest.mark.parametrize("height, width, side", [(1200, 1600, 64), (2000, 3000, 512), (3000, 4000, 512),
                                                  (512, 512, 512), (64, 64, 64), (100, 3000, 64), (37, 53, 512)])
def test_working_size_keeps_the_area_and_the_aspect_ratio_in_multiples_of_8(height, width, side):
    working_height, working_width = working_size(height, width, side)
    assert working_height % 8 == 0 and working_width % 8 == 0 and min(working_height, working_width) >= 8
    # Rounding each side to a multiple of 8 moves it by at most 4 pixels.
    assert abs(working_height - height * side / math.sqrt(height * width)) <= 4
    assert abs(working_width - width * side / math.sqrt(height * width)) <= 4


def test_working_size_of_a_sliver_is_at_least_8():
    assert working_size(10, 4000, 64) == (8, 1280)


@pytest.fixture(scope="module")
def pipeline():
    return OutpaintPipeline(load_models())  # the shipped toy model, working size 64


def photo(height, width):
    """A smooth (3, H, W) photo and a (1, H, W) mask of an object in its middle."""
    rows = torch.linspace(-1, 1, height)[:, None].expand(height, width)
    columns = torch.linspace(-1, 1, width)[None, :].expand(height, width)
    image = torch.stack([rows, columns, rows * columns]) * 0.8
    mask = torch.zeros(1, height, width)
    mask[:, height // 4: 3 * height // 4, width // 3: 2 * width // 3] = 1
    return image, mask


def run(pipeline, image, mask, **kwargs):
    return outpaint_photo(pipeline, image, mask, "a red star in front of a brick wall", options=FAST,
                          generator=torch.Generator().manual_seed(0), **kwargs)


def far_inside(mask, pixels):
    """(H, W) bool: object pixels (mask = 1) more than `pixels` (Euclidean) from every pixel with mask < 1."""
    outside = F.pad((mask[0] < 1).float(), (pixels,) * 4)[None, None]
    height, width = mask.shape[-2:]
    near = torch.zeros(height, width, dtype=torch.bool)
    for dy in range(-pixels, pixels + 1):
        for dx in range(-pixels, pixels + 1):
            if math.hypot(dy, dx) <= pixels:
                near |= outside[0, 0, pixels + dy:pixels + dy + height, pixels + dx:pixels + dx + width] > 0
    return (mask[0] == 1) & ~near


def test_a_1600x1200_photo_comes_back_at_its_size_with_its_own_object_pixels(pipeline):
    image, mask = photo(1200, 1600)
    result = run(pipeline, image, mask)[0]
    assert result.shape == (3, 1200, 1600)
    # The toy model paints 56x72, one of its pixels over 21 of the photo's; the edge is the photo's own
    # mask's, blended over 2 of the photo's pixels: farther inside, every pixel is the photo's.
    core = far_inside(mask, 2)
    assert torch.equal(result[:, core], image[:, core])
    background = erode(1 - mask, 43)[0].bool()  # a working-size pixel's width away from the object
    assert (result[:, background] - image[:, background]).abs().mean() > 0.1  # a new background was painted
    rim = mask[0].bool() & ~core
    assert not torch.equal(result[:, rim], image[:, rim])  # the 2-pixel band blends
    assert torch.equal(result[:, mask[0].bool() & ~erode(mask, 2)[0].bool()], result[:, rim])  # and no more


def test_raw_is_the_model_output_at_the_working_size(pipeline):
    image, mask = photo(120, 160)
    raw = run(pipeline, image, mask, raw=True)
    assert raw.shape == (1, 3, *working_size(120, 160, 64))
    smaller = run(pipeline, image, mask, raw=True, resolution=32)
    assert smaller.shape == (1, 3, *working_size(120, 160, 32))


def test_at_the_working_size_nothing_is_resized(pipeline):
    """The toy example is 64x64 at a working size of 64: the result is the pipeline's own output, its object
    region refilled from the background around it, under the photo's object composited with its own mask
    (the pipeline's paste_back, a feather around the binarised mask, is a working-size option and unchanged)."""
    image, mask = photo(64, 64)
    pasted = run(pipeline, image, mask)
    direct = pipeline(image, mask, "a red star in front of a brick wall", options=FAST,
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(pasted, composite(direct, mask, image, mask, FAST.feather))
    away = erode(1 - mask, 2)[0].bool()  # the background two pixels and more away from the object
    assert torch.equal(pasted[:, :, away], direct[:, :, away])


def test_a_soft_matte_stays_soft_and_the_object_never_spills_into_the_background(pipeline):
    """An RGBA cut-out with a soft edge: out = a * rgb + (1 - a) * background within 1/255, the background
    being the generated one (where a = 0 the output is the generated background itself)."""
    height, width = 300, 400
    rows, columns = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    radius = ((rows - 150) ** 2 + (columns - 200) ** 2).sqrt()
    alpha = ((110 - radius) / 12).clamp(0, 1)[None]  # a disc with a 12-pixel soft edge
    image = torch.stack([torch.full_like(rows, 0.9), torch.full_like(rows, -0.8), torch.full_like(rows, -0.8)])
    def paint(**kwargs):
        return outpaint_photo(pipeline, image, alpha, "a red circle in front of a blue sky", options=FAST,
                              generator=torch.Generator().manual_seed(0), **kwargs)

    result, generated = paint(), paint(raw=True)
    background = composite(generated, resize(alpha, generated.shape[-2:], "bilinear"), image,
                           torch.zeros_like(alpha), FAST.feather)
    expected = alpha * image + (1 - alpha) * background
    assert (to_uint8(result[0]).float() - (expected[0] + 1) * 127.5).abs().max() <= 1
    # The background carries no copy of the red object (upscaled, the model's rim of it would be 20 px
    # wide): under the soft edge and just outside it, it is as red as far away.
    redness = background[0, 0] - background[0, 1]
    assert redness[(radius > 98) & (radius < 115)].mean() < redness[radius > 140].mean() + 0.1


def test_the_full_size_edge_of_a_rotated_phone_photo_is_its_own(tmp_path):
    """A phone photo stored 1200x1600 with EXIF orientation 6 (upright: 1600 wide, 1200 high): every pixel
    more than 2 px inside the mask is the photo's byte for byte; the object grows no more at full size than
    in the working-size result (both segmented by the toy world's colour segmenter at their own size)."""
    shown, shown_mask = scene(width=1600, height=1200)
    save_as_stored(shown, tmp_path / "phone.jpg", 6, quality=95)
    save_as_stored(shown_mask, tmp_path / "phone_mask.png", 6)
    flags = ["--image", str(tmp_path / "phone.jpg"), "--mask", str(tmp_path / "phone_mask.png"), "--prompt",
             "a red square in front of a blue sky", "--steps", "2", "--num-images", "1", "--guidance", "3"]
    assert sample_cli.main([*flags, "--out", str(tmp_path / "full")]) == 0
    assert sample_cli.main([*flags, "--out", str(tmp_path / "raw"), "--raw"]) == 0
    result = load_image(tmp_path / "full" / "phone_0.png")
    photo_shown, mask = load_image(tmp_path / "phone.jpg"), load_mask(tmp_path / "phone_mask.png")
    assert result.shape == (3, 1200, 1600)
    core = far_inside(mask, 2)
    assert torch.equal(to_uint8(result)[:, core], to_uint8(photo_shown)[:, core])

    working = load_image(tmp_path / "raw" / "phone_0.png")
    working_mask = binarize(resize(mask, working.shape[-2:], "bilinear"))
    segmenter = ColourSegmenter()

    def expansion(image, object_mask):
        found = segmenter(image, SegmentPrompt(mask=object_mask))[0].bool()
        return object_expansion(object_mask[0].bool(), found).expansion_fraction

    assert expansion(result, mask) <= expansion(working, working_mask)


def test_a_mask_of_another_size_is_refused_before_resizing_hides_it(pipeline):
    image, _ = photo(120, 160)
    with pytest.raises(InputError, match="give a mask of the image's size"):
        run(pipeline, image, torch.ones(1, 60, 80))
