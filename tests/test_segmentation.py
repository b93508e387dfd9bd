"""The segmentation package: one interface, image (3, H, W) in [-1, 1] + prompt -> (1, H, W) map in [0, 1].

The colour segmenter on drawn shapes and toy scenes; refine_mask on known answers; the plumbing of the
SAM and InSPyReNet backends with random weights (their extras absent: skipped, saying which).
"""
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from salient_outpaint.data.images import load_mask, save_image
from salient_outpaint.data.synthetic import ToyWorldDataset
from salient_outpaint.evaluation.expansion import object_expansion
from salient_outpaint.segmentation import SegmentPrompt, SegmenterError, make_segmenter, refine_mask
from salient_outpaint.segmentation.colour import ColourSegmenter, regions_touching
from salient_outpaint.segmentation.make_masks import main as make_masks_main

RED = torch.tensor([0.8, -0.6, -0.7])
BLUE = torch.tensor([-0.7, -0.2, 0.9])
NEEDS_SAM = dict(reason="SAM is an optional extra: pip install -e '.[sam]'")
NEEDS_INSPYRENET = dict(reason="InSPyReNet is an optional extra: pip install -e '.[mask]'")


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


def as_prompt_mask(mask):
    return SegmentPrompt(mask=mask.float()[None])


# colour

def test_colour_segmenter_recovers_a_drawn_shape_exactly():
    shape = disc(64, (30, 25), 12)
    found = make_segmenter("colour")(paint(BLUE, [(shape, RED)]), as_prompt_mask(shape))
    assert found.shape == (1, 64, 64) and found.dtype == torch.float32
    assert torch.equal(found[0].bool(), shape)


def test_colour_segmenter_finds_the_grown_object_and_its_exact_expansion():
    original = torch.zeros(64, 64, dtype=torch.bool)
    original[20:36, 20:36] = True  # a 16 x 16 red square
    grown = torch.zeros(64, 64, dtype=torch.bool)
    grown[17:39, 20:41] = True  # the generator grew it 3 rows up and down, 5 columns right
    generated = paint(BLUE, [(grown, RED)], noise=0.05)  # a textured object on a textured background
    found = ColourSegmenter(tolerance=0.25)(generated, as_prompt_mask(original))[0].bool()
    assert torch.equal(found, grown)
    assert object_expansion(original, found).expanded_pixels == 22 * 21 - 16 * 16


def test_colour_segmenter_ignores_a_same_coloured_region_that_does_not_touch_the_prompt():
    shape = disc(64, (20, 20), 8)
    elsewhere = disc(64, (50, 50), 6)  # red too, but part of the background
    image = paint(BLUE, [(shape, RED), (elsewhere, RED)])
    assert torch.equal(ColourSegmenter()(image, as_prompt_mask(shape))[0].bool(), shape)
    assert torch.equal(ColourSegmenter()(image, SegmentPrompt(points=((50, 50),)))[0].bool(), elsewhere)
    assert torch.equal(ColourSegmenter()(image, SegmentPrompt(box=(10, 10, 31, 31)))[0].bool(), shape)


def test_colour_segmenter_without_a_prompt_finds_a_toy_object_by_its_palette():
    for index in range(4):
        scene = ToyWorldDataset(4, size=64, seed=0, split="test")[index]
        found = ColourSegmenter()(scene["image"])[0].bool()
        truth = scene["mask"][0].bool()
        assert (found & truth).sum() / (found | truth).sum() > 0.9, scene["caption"]


def test_colour_segmenter_explains_bad_inputs():
    with pytest.raises(SegmenterError, match="same pixels"):
        ColourSegmenter()(torch.zeros(3, 8, 8), SegmentPrompt(mask=torch.ones(1, 4, 4)))
    with pytest.raises(SegmenterError, match="empty"):
        ColourSegmenter()(torch.zeros(3, 8, 8), SegmentPrompt(mask=torch.zeros(1, 8, 8)))
    with pytest.raises(SegmenterError, match=r"\(3, H, W\) float"):
        ColourSegmenter()(torch.zeros(8, 8))
    with pytest.raises(SegmenterError, match="outside"):
        ColourSegmenter()(torch.zeros(3, 8, 8), SegmentPrompt(points=((8, 2),)))
    with pytest.raises(SegmenterError, match="X0 < X1"):
        ColourSegmenter()(torch.zeros(3, 8, 8), SegmentPrompt(box=(5, 0, 2, 4)))
    with pytest.raises(SegmenterError, match="palette"):
        ColourSegmenter()(paint(BLUE, [(disc(8, (4, 4), 2), BLUE)]))


def test_regions_touching_follows_diagonal_steps_and_stops_at_gaps():
    allowed = torch.eye(6, dtype=torch.bool)  # a diagonal line: 8-connected
    allowed[0, 5] = True  # an isolated pixel
    seeds = torch.zeros(6, 6, dtype=torch.bool)
    seeds[0, 0] = True
    assert torch.equal(regions_touching(seeds, allowed), torch.eye(6, dtype=torch.bool))


def test_unknown_segmenter_names_the_choices():
    with pytest.raises(SegmenterError, match="inspyrenet, sam, colour"):
        make_segmenter("u2net")


# refine_mask

def square(size, top, left, side):
    mask = torch.zeros(1, size, size)
    mask[:, top:top + side, left:left + side] = 1
    return mask


@pytest.mark.parametrize("grow", [0, 1, 3, -2])
def test_refine_mask_grows_a_square_by_exactly_grow_pixels_each_side(grow):
    """Square structuring element: a 10 x 10 square becomes (10 + 2 grow) x (10 + 2 grow), in place."""
    grown = refine_mask(square(32, 11, 11, 10), grow=grow)
    assert torch.equal(grown, square(32, 11 - grow, 11 - grow, 10 + 2 * grow))


def test_refine_mask_cuts_a_soft_map_at_the_threshold():
    soft_map = torch.tensor([[[0.1, 0.3, 0.5, 0.7, 0.9]]])
    assert refine_mask(soft_map).tolist() == [[[0, 0, 0, 1, 1]]]  # the pipeline's cut: above 0.5
    assert refine_mask(soft_map, threshold=0.5).tolist() == [[[0, 0, 1, 1, 1]]]  # a chosen one: from it
    assert refine_mask(soft_map, threshold=0.8).tolist() == [[[0, 0, 0, 0, 1]]]
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        refine_mask(soft_map, threshold=0)


# SAM

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


def test_sam_names_the_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails as if not installed
    with pytest.raises(SegmenterError, match=r"pip install -e '.\[sam\]'.*--mask"):
        make_segmenter("sam", "sam_vit_b_01ec64.pth")


def test_sam_names_the_missing_checkpoint_the_wrong_file_and_bad_model_types(tmp_path):
    pytest.importorskip("segment_anything", **NEEDS_SAM)
    with pytest.raises(SegmenterError, match="sam_vit_h_4b8939.pth.*--mask-weights.*--mask"):
        make_segmenter("sam", tmp_path / "missing.pth", model_type="vit_h")
    with pytest.raises(SegmenterError, match="needs its weights"):
        make_segmenter("sam")
    with pytest.raises(SegmenterError, match="vit_b"):
        make_segmenter("sam", tmp_path / "missing.pth", model_type="vit_s")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(SegmenterError, match="not a segment-anything checkpoint"):
        make_segmenter("sam", tmp_path / "other.pth")


def test_sam_returns_a_soft_map_of_the_image_size():
    pytest.importorskip("segment_anything", **NEEDS_SAM)
    from salient_outpaint.segmentation.sam import SAMSegmenter

    shape = disc(64, (30, 40), 10)[:, :48]  # a 64 x 48 image: SAM pads the short side internally
    found = SAMSegmenter(tiny_sam())(paint(BLUE, [(shape, RED)]), SegmentPrompt(points=((40, 30),)))
    assert found.shape == (1, 64, 48) and found.dtype == torch.float32
    assert 0 <= found.min() and found.max() <= 1


@pytest.mark.parametrize("prompt_kind", ["points", "box", "mask"])
def test_sam_forwards_each_prompt_and_keeps_the_best_scored_candidate(monkeypatch, prompt_kind):
    pytest.importorskip("segment_anything", **NEEDS_SAM)
    from salient_outpaint.segmentation.sam import SAMSegmenter

    segmenter = SAMSegmenter(tiny_sam(), points_per_mask=4)
    shape = disc(64, (30, 30), 12)
    logits = np.full((3, 64, 64), -5.0, dtype=np.float32)
    logits[1, :10] = 5.0  # the candidate SAM will score highest
    asked = {}

    def fake_predict(point_coords, point_labels, box, multimask_output, return_logits):
        asked.update(points=point_coords, labels=point_labels, box=box, logits=return_logits)
        return logits, np.array([0.2, 0.9, 0.5]), np.zeros((3, 16, 16))

    monkeypatch.setattr(segmenter.predictor, "predict", fake_predict)
    prompt = {"points": SegmentPrompt(points=((30, 31), (25, 28))), "box": SegmentPrompt(box=(18, 18, 43, 43)),
              "mask": as_prompt_mask(shape)}[prompt_kind]
    found = segmenter(paint(BLUE, [(shape, RED)]), prompt)
    torch.testing.assert_close(found[0], torch.sigmoid(torch.from_numpy(logits[1])))
    assert asked["logits"]
    if prompt_kind == "points":
        assert asked["points"].tolist() == [[30, 31], [25, 28]] and (asked["labels"] == 1).all()
        assert asked["box"] is None
    if prompt_kind == "box":
        assert asked["box"].tolist() == [18, 18, 43, 43] and asked["points"] is None
    if prompt_kind == "mask":  # points sampled on the object
        xs, ys = asked["points"][:, 0].astype(int), asked["points"][:, 1].astype(int)
        assert asked["points"].shape == (4, 2) and shape[ys, xs].all() and (asked["labels"] == 1).all()


def test_sam_without_a_prompt_says_how_to_give_one():
    pytest.importorskip("segment_anything", **NEEDS_SAM)
    from salient_outpaint.segmentation.sam import SAMSegmenter

    with pytest.raises(SegmenterError, match="--point X,Y.*--box X0,Y0,X1,Y1"):
        SAMSegmenter(tiny_sam())(torch.zeros(3, 16, 16))


@pytest.mark.slow
def test_sam_vit_b_from_a_random_weights_file_through_make_segmenter(tmp_path):
    segment_anything = pytest.importorskip("segment_anything", **NEEDS_SAM)
    torch.manual_seed(0)
    torch.save(segment_anything.sam_model_registry["vit_b"](checkpoint=None).state_dict(), tmp_path / "sam.pth")
    segmenter = make_segmenter("sam", tmp_path / "sam.pth", points_per_mask=2)  # vit_b read from the weights
    shape = disc(48, (20, 24), 9)
    found = segmenter(paint(BLUE, [(shape, RED)]), as_prompt_mask(shape))  # ~20 s: vit_b encodes at 1024 px
    assert found.shape == (1, 48, 48) and 0 <= found.min() and found.max() <= 1


# InSPyReNet

def test_inspyrenet_names_the_missing_file_where_to_get_it_and_the_alternative(tmp_path):
    with pytest.raises(SegmenterError, match=r"ckpt_base.pth from https://github.com/plemeri/transparent-background"
                                             r".*--mask-weights.*--mask"):
        make_segmenter("inspyrenet", tmp_path / "missing.pth")


def test_inspyrenet_names_the_missing_extra(tmp_path, monkeypatch):
    (tmp_path / "ckpt_base.pth").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "transparent_background", None)
    monkeypatch.setitem(sys.modules, "transparent_background.InSPyReNet", None)
    with pytest.raises(SegmenterError, match=r"pip install -e '.\[mask\]'.*--mask"):
        make_segmenter("inspyrenet", tmp_path / "ckpt_base.pth")


@pytest.mark.slow
def test_inspyrenet_from_a_random_weights_file_gives_a_map_at_the_input_size(tmp_path):
    """The package's network (Swin-B, 91 M parameters) at a 64 px input to stay quick on a CPU."""
    pytest.importorskip("transparent_background", **NEEDS_INSPYRENET)
    from salient_outpaint.segmentation.inspyrenet import build_network

    torch.manual_seed(0)
    torch.save(build_network(size=64).state_dict(), tmp_path / "ckpt_base.pth")
    segmenter = make_segmenter("inspyrenet", tmp_path / "ckpt_base.pth", size=64)
    image = paint(BLUE, [(disc(48, (20, 24), 9)[:, :40], RED)])  # (3, 48, 40)
    found = segmenter(image)
    assert found.shape == (1, 48, 40) and found.dtype == torch.float32
    assert 0 <= found.min() and found.max() <= 1
    with pytest.raises(SegmenterError, match="--segmenter sam"):
        segmenter(image, SegmentPrompt(points=((3, 3),)))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(SegmenterError, match="does not hold InSPyReNet weights"):
        make_segmenter("inspyrenet", tmp_path / "other.pth", size=64)


# make-masks

def test_make_masks_writes_a_mask_per_toy_image_with_the_colour_segmenter(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    scenes = [ToyWorldDataset(3, size=64, seed=0, split="test")[index] for index in range(3)]
    for index, scene in enumerate(scenes):
        save_image(scene["image"], tmp_path / "images" / f"scene_{index}.png")
    assert make_masks_main(["make-masks", str(tmp_path / "images"), str(tmp_path / "masks"),
                            "--segmenter", "colour", "--threshold", "0.5"]) == 0
    assert sorted(path.name for path in (tmp_path / "masks").iterdir()) == [f"scene_{i}.png" for i in range(3)]
    for index, scene in enumerate(scenes):
        mask = load_mask(tmp_path / "masks" / f"scene_{index}.png")
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        truth = scene["mask"].bool()
        assert (mask.bool() & truth).sum() / (mask.bool() | truth).sum() > 0.9


def test_make_masks_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        make_masks_main(["make-masks", str(tmp_path / "empty"), str(tmp_path / "masks"), "--segmenter", "colour"])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip() == f"error: no images in {tmp_path / 'empty'}"
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "x.png")
    with pytest.raises(SystemExit):
        make_masks_main(["make-masks", str(tmp_path / "empty"), str(tmp_path / "masks")])  # inspyrenet, no weights
    assert "--mask-weights" in capsys.readouterr().err


def test_colour_segmenter_finds_every_toy_input_object_whole_and_nothing_else():
    """Self-check on the held-out toy inputs (striped objects included): prompted by the object's own mask,
    it finds at least 99% of the object and at most 1% of its area outside it, in every scene."""
    segmenter, scenes = ColourSegmenter(), ToyWorldDataset(50, size=64, seed=0, split="test")
    textures = set()
    for index in range(len(scenes)):
        scene = scenes[index]
        textures.add(scene["texture"])
        mask = scene["mask"][0].bool()
        found = refine_mask(segmenter(scene["image"], SegmentPrompt(mask=mask[None].float())))[0].bool()
        assert float((found & mask).sum()) / float(mask.sum()) >= 0.99, index
        assert object_expansion(mask, found).expansion_ratio <= 0.01, index
    assert textures == {"plain", "striped"}
