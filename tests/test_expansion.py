"""Object expansion: exact areas for grown squares; and the mask geometry of its SAM prompt (data/masks.py):
the distance transform, prompt points."""
import pytest
import torch

from salient_outpaint.data.masks import CORE_DEPTH_FRACTION, distance_to_background, sample_points_in_mask
from salient_outpaint.evaluation.expansion import object_expansion


def square_mask(size, top, left, side):
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:top + side, left:left + side] = True
    return mask


@pytest.mark.parametrize("grow_by", [0, 1, 3, 7])
def test_square_grown_by_k_pixels_expands_by_the_ring_area(grow_by):
    side = 10
    original = square_mask(64, 20, 20, side)
    grown = square_mask(64, 20 - grow_by, 20 - grow_by, side + 2 * grow_by)
    expansion = object_expansion(original, grown)
    ring_area = (side + 2 * grow_by) ** 2 - side ** 2
    assert expansion.expanded_pixels == ring_area
    assert expansion.expansion_fraction == ring_area / 64 ** 2
    assert expansion.expansion_ratio == ring_area / side ** 2


def test_shrinking_or_shifting_only_counts_pixels_gained():
    original = square_mask(32, 8, 8, 10)
    assert object_expansion(original, square_mask(32, 10, 10, 4)).expanded_pixels == 0  # shrank: nothing gained
    shifted = square_mask(32, 8, 11, 10)  # 3 new columns of 10 pixels on the right
    assert object_expansion(original, shifted).expanded_pixels == 30


def test_expansion_rejects_masks_it_cannot_compare():
    with pytest.raises(ValueError, match="differ in size"):
        object_expansion(square_mask(32, 0, 0, 4), square_mask(16, 0, 0, 4))
    with pytest.raises(ValueError, match="empty"):
        object_expansion(torch.zeros(8, 8, dtype=torch.bool), square_mask(8, 0, 0, 4))
    with pytest.raises(ValueError, match="bool"):
        object_expansion(square_mask(8, 0, 0, 4).float(), square_mask(8, 0, 0, 4))


def test_distance_to_background_of_a_square_counts_steps_to_the_nearest_outside_pixel():
    depth = distance_to_background(square_mask(9, 1, 1, 7))
    assert depth[4, 4] == 4  # the centre: 4 pixels from the ring outside the square
    assert depth[1, 1] == 1 and depth[1, 4] == 1  # corner and edge pixels touch the outside
    assert depth[0, 0] == 0
    # Pixels past the image border count as outside: a full image's corner is 1 away from it.
    assert distance_to_background(torch.ones(5, 5, dtype=torch.bool))[0, 0] == 1


def test_distance_to_background_matches_scipy_exact_euclidean_transform():
    ndimage = pytest.importorskip("scipy.ndimage", reason="scipy gives the reference transform")
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(40, 56, generator=generator) > 0.1
    mask[10:30, 10:40] = True  # a large block, so distances reach well beyond 1
    padded = torch.nn.functional.pad(mask, (1, 1, 1, 1), value=False).numpy()  # scipy: outside = background
    expected = torch.from_numpy(ndimage.distance_transform_edt(padded)[1:-1, 1:-1])
    # Both are exact: sqrt of the same integer squared distance.
    torch.testing.assert_close(distance_to_background(mask), expected, rtol=0, atol=1e-12)


def test_prompt_points_are_x_y_inside_the_mask_core_and_reproducible():
    mask = torch.zeros(40, 80, dtype=torch.bool)
    mask[5:25, 20:70] = True  # wide rectangle: x spans 20..69, y spans 5..24
    points = sample_points_in_mask(mask, 5, torch.Generator().manual_seed(1))
    assert points.shape == (5, 2) and points.dtype == torch.int64
    xs, ys = points[:, 0], points[:, 1]
    assert mask[ys, xs].all()
    depth = distance_to_background(mask)
    assert (depth[ys, xs] >= CORE_DEPTH_FRACTION * depth.max()).all()  # away from the boundary
    assert len({tuple(point.tolist()) for point in points}) == 5  # distinct
    torch.testing.assert_close(points, sample_points_in_mask(mask, 5, torch.Generator().manual_seed(1)))


def test_prompt_points_in_a_one_pixel_mask_repeat_that_pixel():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2, 6] = True
    assert sample_points_in_mask(mask, 3).tolist() == [[6, 2]] * 3
    with pytest.raises(ValueError, match="empty"):
        sample_points_in_mask(torch.zeros(8, 8, dtype=torch.bool), 3)
