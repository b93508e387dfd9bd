"""Segmenters: the colour segmenter on drawn shapes, and the plumbing of the SAM segmenter."""
import sys

import numpy as np
import pytest
import torch

from salient_outpaint.evaluation.expansion import object_expansion
from salient_outpaint.evaluation.segmenters import ColourSegmenter, SAMSegmenter, load_sam, regions_touching

RED = torch.tensor([0.8, -0.6, -0.7])
BLUE = torch.tensor([-0.7, -0.2, 0.9])


def disc(size, centre, radius):
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius ** 2


def paint(background, shapes_and_colours, noise=0.0, seed=0):
    """A (3, H, W) image: `background` colour everywhere, each (mask, colour) painted over it, plus uniform noise."""
    image = background[:, None, None].expand(3, *shapes_and_colours[0][0].shape).clone()
    for mask, colour in shapes_and_colours:
        image[:, mask] = colour[:, None]
    generator = torch.Generator().manual_seed(seed)
    return image + noise * (2 * torch.rand(image.shape, generator=generator) - 1)


def test_colour_segmenter_recovers_a_drawn_shape_exactly():
    shape = disc(64, (30, 25), 12)
    image = paint(BLUE, [(shape, RED)])
    assert torch.equal(ColourSegmenter().segment(image, shape), shape)


def test_colour_segmenter_finds_the_grown_object_and_its_exact_expansion():
    original = torch.zeros(64, 64, dtype=torch.bool)
    original[20:36, 20:36] = True  # a 16 x 16 red square
    grown = torch.zeros(64, 64, dtype=torch.bool)
    grown[17:39, 20:41] = True  # the generator grew it 3 rows up and down, 5 columns right
    generated = paint(BLUE, [(grown, RED)], noise=0.05)  # a textured object on a textured background
    found = ColourSegmenter(tolerance=0.25).segment(generated, original)
    assert torch.equal(found, grown)
    assert object_expansion(original, found).expanded_pixels == 22 * 21 - 16 * 16


def test_colour_segmenter_ignores_a_same_coloured_region_that_does_not_touch_the_object():
    shape = disc(64, (20, 20), 8)
    elsewhere = disc(64, (50, 50), 6)  # red too, but part of the background
    image = paint(BLUE, [(shape, RED), (elsewhere, RED)])
    assert torch.equal(ColourSegmenter().segment(image, shape), shape)


def test_colour_segmenter_explains_bad_inputs():
    with pytest.raises(ValueError, match="same pixels"):
        ColourSegmenter().segment(torch.zeros(3, 8, 8), torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="empty"):
        ColourSegmenter().segment(torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(3, H, W\) float"):
        ColourSegmenter().segment(torch.zeros(8, 8), torch.ones(8, 8, dtype=torch.bool))


def test_regions_touching_follows_diagonal_steps_and_stops_at_gaps():
    allowed = torch.eye(6, dtype=torch.bool)  # a diagonal line: 8-connected
    allowed[0, 5] = True  # an isolated pixel
    seeds = torch.zeros(6, 6, dtype=torch.bool)
    seeds[0, 0] = True
    expected = torch.eye(6, dtype=torch.bool)
    assert torch.equal(regions_touching(seeds, allowed), expected)


def test_sam_loading_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install segment-anything"):
        load_sam("sam_vit_b_01ec64.pth")


def test_sam_loading_names_the_missing_checkpoint_and_bad_model_types(tmp_path):
    pytest.importorskip("segment_anything", reason="SAM is an optional extra: pip install segment-anything")
    with pytest.raises(FileNotFoundError, match="sam_vit_h_4b8939.pth"):
        SAMSegmenter.from_checkpoint(tmp_path / "missing.pth", model_type="vit_h")
    with pytest.raises(ValueError, match="vit_b"):
        load_sam(tmp_path / "missing.pth", model_type="vit_s")


def tiny_sam():
    """A SAM of the real design at 64 px with one narrow block: seconds faster than vit_b at 1024 px."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    return Sam(image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                             out_chans=32),
               prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(4, 4), input_image_size=(64, 64),
                                            mask_in_chans=4),
               mask_decoder=MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=1, embedding_dim=32,
                                                                                          mlp_dim=64, num_heads=2)),
               pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def test_sam_segmenter_returns_a_bool_mask_of_the_image_size():
    pytest.importorskip("segment_anything", reason="SAM is an optional extra: pip install segment-anything")
    shape = disc(64, (30, 40), 10)[:, :48]  # a 64 x 48 image: SAM pads the short side internally
    image = paint(BLUE, [(shape, RED)])
    found = SAMSegmenter(tiny_sam(), points_per_mask=3).segment(image, shape)
    assert found.shape == (64, 48) and found.dtype == torch.bool


def test_sam_segmenter_prompts_inside_the_mask_and_keeps_the_best_scored_mask(monkeypatch):
    pytest.importorskip("segment_anything", reason="SAM is an optional extra: pip install segment-anything")
    segmenter = SAMSegmenter(tiny_sam(), points_per_mask=4)
    shape = disc(64, (30, 30), 12)
    candidates = np.zeros((3, 64, 64), dtype=bool)
    candidates[1, :10] = True  # the mask SAM will score highest
    prompts = {}

    def fake_predict(point_coords, point_labels, multimask_output):
        prompts.update(points=point_coords, labels=point_labels, multimask=multimask_output)
        return candidates, np.array([0.2, 0.9, 0.5]), np.zeros((3, 16, 16))

    monkeypatch.setattr(segmenter.predictor, "predict", fake_predict)
    found = segmenter.segment(paint(BLUE, [(shape, RED)]), shape)
    assert torch.equal(found, torch.from_numpy(candidates[1]))
    xs, ys = prompts["points"][:, 0], prompts["points"][:, 1]
    assert prompts["points"].shape == (4, 2) and shape[ys, xs].all()  # (x, y) points on the object
    assert (prompts["labels"] == 1).all() and prompts["multimask"]  # foreground points, three candidates


@pytest.mark.slow
def test_sam_vit_b_from_a_checkpoint_file_segments_a_small_image(tmp_path):
    segment_anything = pytest.importorskip("segment_anything", reason="SAM is an optional extra: "
                                                                      "pip install segment-anything")
    torch.manual_seed(0)
    torch.save(segment_anything.sam_model_registry["vit_b"](checkpoint=None).state_dict(), tmp_path / "sam_vit_b.pth")
    segmenter = SAMSegmenter.from_checkpoint(tmp_path / "sam_vit_b.pth", model_type="vit_b", points_per_mask=2)
    shape = disc(48, (20, 24), 9)
    found = segmenter.segment(paint(BLUE, [(shape, RED)]), shape)  # ~20 s: vit_b encodes at 1024 px on CPU
    assert found.shape == (48, 48) and found.dtype == torch.bool
