"""The synthetic toy world and the mask utilities it trains with."""
import pytest
import torch

from salient_outpaint.data.masks import dilate, erode, feathered_paste, random_inpainting_mask
from salient_outpaint.data.synthetic import (BACKGROUNDS, ToyWorldDataset, background_signatures,
                                             classify_background, draw_background, render_scene,
                                             scene_generator)


def test_scenes_are_a_pure_function_of_seed_split_epoch_and_index():
    first, again = ToyWorldDataset(8, seed=1), ToyWorldDataset(8, seed=1)
    for index in range(8):
        a, b = first[index], again[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert a["caption"] == b["caption"]
    first.set_epoch(1)
    assert not torch.equal(first[0]["image"], again[0]["image"])  # training draws new scenes each epoch
    held_out = ToyWorldDataset(8, seed=1, split="test")
    held_out.set_epoch(5)
    assert torch.equal(held_out[0]["image"], ToyWorldDataset(8, seed=1, split="test")[0]["image"])
    assert not torch.equal(held_out[0]["image"], again[0]["image"])


def test_a_scene_is_an_image_a_binary_object_mask_and_a_caption_naming_both():
    for item in (ToyWorldDataset(20, size=64)[index] for index in range(20)):
        assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
        assert item["image"].min() >= -1 and item["image"].max() <= 1
        assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
        assert 0.02 < item["mask"].mean() < 0.5
        assert item["colour"] in item["caption"] and item["shape"] in item["caption"]
        assert item["caption"].endswith(BACKGROUNDS[item["background"]])
        object_pixels = item["image"][:, item["mask"][0].bool()]
        assert object_pixels.std(dim=1).max() < 0.35 or item["texture"] == "striped"


def test_backgrounds_are_recognised_from_their_colours():
    signatures = background_signatures()
    scenes = ToyWorldDataset(100, split="test")
    correct = sum(classify_background(scenes[i]["image"], scenes[i]["mask"], signatures) == scenes[i]["background"]
                  for i in range(len(scenes)))
    assert correct >= 95
    noise = torch.rand(3, 64, 64) * 2 - 1
    assert classify_background(noise, torch.zeros(1, 64, 64), signatures) in BACKGROUNDS


def test_dilate_and_erode_move_the_edge_by_the_given_pixels():
    mask = torch.zeros(1, 32, 32)
    mask[:, 10:20, 10:20] = 1
    assert dilate(mask, 2).sum() == 14 * 14
    assert erode(mask, 3).sum() == 4 * 4
    assert torch.equal(erode(dilate(mask, 2), 2), mask)


def test_random_inpainting_masks_vary_and_are_reproducible():
    masks = [random_inpainting_mask(64, 64, torch.Generator().manual_seed(seed)) for seed in range(50)]
    coverage = torch.stack([mask.mean() for mask in masks])
    assert coverage.min() > 0 and coverage.max() < 1
    assert coverage.max() - coverage.min() > 0.3
    assert torch.equal(masks[7], random_inpainting_mask(64, 64, torch.Generator().manual_seed(7)))


def test_feathered_paste_keeps_the_object_core_and_the_generated_background():
    generated, original = torch.zeros(2, 3, 32, 32), torch.ones(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    pasted = feathered_paste(generated, original, mask, feather=2)
    assert torch.equal(pasted[..., 10:22, 10:22], torch.ones(2, 3, 12, 12))  # 2 px inside the edge: exact
    assert torch.equal(pasted[..., :8, :], torch.zeros(2, 3, 8, 32))  # outside: untouched
    edge = pasted[0, 0, 16, 8]
    assert 0 < edge < 1  # the edge blends
    assert torch.equal(feathered_paste(generated, original, mask, feather=0)[..., 8:24, 8:24],
                       torch.ones(2, 3, 16, 16))


def test_a_scene_drawn_at_4x_is_the_same_scene_in_statistics():
    """render_scene(size) draws the object's geometry before the background, so at 4x the caption and the
    object are the same (its mask, shrunk back, agrees on 99% of pixels: only the antialiased rim differs);
    the background is recognised as the same background by the signatures drawn at the working size."""
    signatures = background_signatures()
    for index in range(12):
        small = ToyWorldDataset(12, size=64, split="test")[index]
        large = ToyWorldDataset(12, size=256, split="test")[index]
        assert large["image"].shape == (3, 256, 256) and large["caption"] == small["caption"]
        shrunk = (torch.nn.functional.avg_pool2d(large["mask"][None], 4)[0] > 0.5).float()
        assert (shrunk == small["mask"]).float().mean() > 0.99
        assert classify_background(large["image"], large["mask"], signatures) == large["background"]


@pytest.mark.parametrize("name", BACKGROUNDS)
def test_the_random_textures_have_a_grain_so_4x_is_the_same_background_seen_sharper(name):
    """Grass, sand, brick noise and stars are drawn one value per grain (1/GRAIN of the side), so drawn at
    4x and averaged back over 4x4 blocks they are the working-size drawing exactly; the geometric
    backgrounds differ only where an edge crosses a pixel (sampled at pixel centres, not antialiased).
    At 4x the block edges are the detail a sharper picture shows: 1/4 as many neighbour differences as
    the working size has, each as large."""
    small = draw_background(name, 64, torch.Generator().manual_seed(3)).clamp(0, 1)
    large = draw_background(name, 256, torch.Generator().manual_seed(3)).clamp(0, 1)
    shrunk = torch.nn.functional.avg_pool2d(large[None], 4)[0]
    if name in ("grass", "sand", "night"):
        torch.testing.assert_close(shrunk, small, atol=1e-6, rtol=0)
        steps_small = (small[:, 1:] - small[:, :-1]).abs().sum()
        steps_large = (large[:, 1:] - large[:, :-1]).abs().sum()
        torch.testing.assert_close(steps_large, 4 * steps_small, rtol=1e-4, atol=0)  # 4x the rows, same steps
    else:
        assert (shrunk - small).abs().mean() < 0.04
    assert torch.equal(draw_background(name, 64, torch.Generator().manual_seed(3)).clamp(0, 1), small)


def test_zoomed_items_are_windows_of_the_scene_drawn_larger():
    """ToyWorldDataset(zooms=(2, 4)): item i is a training-size window of scene i drawn at 2x or 4x in turn,
    with the scene's caption and its mask cut the same way, at most half object; the same item twice is the
    same window."""
    zoomed = ToyWorldDataset(8, size=64, split="train", zooms=(2, 4))
    plain = ToyWorldDataset(8, size=64, split="train")
    for index in range(8):
        item = zoomed[index]
        scene = render_scene(64 * (2, 4)[index % 2], scene_generator(0, "train", 0, index))
        assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
        assert item["caption"] == scene["caption"] == plain[index]["caption"]
        assert item["mask"].mean() <= 0.5
        first_rows = (scene["image"].unfold(2, 64, 1) == item["image"][:, 0, None, None, :]).all(-1).all(0)
        found = [(top, left) for top, left in first_rows[:-63].nonzero().tolist()
                 if torch.equal(scene["image"][:, top:top + 64, left:left + 64], item["image"])
                 and torch.equal(scene["mask"][:, top:top + 64, left:left + 64], item["mask"])]
        assert found, index
        assert torch.equal(zoomed[index]["image"], item["image"])
