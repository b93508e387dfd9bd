"""Full-size photos: painted at the working size, returned at their own size with their own object pixels."""
import math

import pytest
import torch

from salient_outpaint.data.masks import erode
from salient_outpaint.loading import load_models
from salient_outpaint.photo import outpaint_photo, working_size
from salient_outpaint.inputs import InputError
from salient_outpaint.options import SamplingOptions
from salient_outpaint.pipeline import OutpaintPipeline

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


def test_a_1600x1200_photo_comes_back_at_its_size_with_its_own_object_pixels(pipeline):
    image, mask = photo(1200, 1600)
    result = run(pipeline, image, mask)[0]
    assert result.shape == (3, 1200, 1600)
    # The toy model paints 56x72: one of its pixels covers 21 of the photo's, so its 2-pixel feather
    # becomes 43; beyond that band inside the object, every pixel is the photo's own.
    core = erode(mask, 43)[0].bool()
    assert torch.equal(result[:, core], image[:, core])
    background = erode(1 - mask, 43)[0].bool()  # the band's width away from the object
    assert (result[:, background] - image[:, background]).abs().mean() > 0.1  # a new background was painted
    rim = mask[0].bool() & ~core
    assert not torch.equal(result[:, rim], image[:, rim])  # the band blends


def test_raw_is_the_model_output_at_the_working_size(pipeline):
    image, mask = photo(120, 160)
    raw = run(pipeline, image, mask, raw=True)
    assert raw.shape == (1, 3, *working_size(120, 160, 64))
    smaller = run(pipeline, image, mask, raw=True, resolution=32)
    assert smaller.shape == (1, 3, *working_size(120, 160, 32))


def test_at_the_working_size_nothing_is_resized(pipeline):
    """The toy example is 64x64 at a working size of 64: the result is the pipeline's with the object pasted."""
    image, mask = photo(64, 64)
    pasted = run(pipeline, image, mask)
    direct = pipeline(image, mask, "a red star in front of a brick wall", options=SamplingOptions(
        steps=2, guidance=3.0, paste_back=True), generator=torch.Generator().manual_seed(0))
    assert torch.equal(pasted, direct)


def test_a_mask_of_another_size_is_refused_before_resizing_hides_it(pipeline):
    image, _ = photo(120, 160)
    with pytest.raises(InputError, match="give a mask of the image's size"):
        run(pipeline, image, torch.ones(1, 60, 80))
