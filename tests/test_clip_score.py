"""CLIP score and object similarity on a tiny random-weight open_clip model."""
import copy
import json

import open_clip
import pytest
import torch

from salient_outpaint.evaluation.clip_score import (CLIPEmbedder, clip_score, load_clip_embedder, mask_bounding_box,
                                                    object_similarity, square_object_crop)

# A CLIP small enough to build in milliseconds; the real vocabulary and context so the stock tokenizer fits.
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return open_clip.model.CLIP(**TINY_CLIP_CONFIG)


@pytest.fixture(scope="module")
def embedder(tiny_clip):
    return CLIPEmbedder(tiny_clip, open_clip.get_tokenizer("ViT-B-32"))


def random_images(count, seed, height=48, width=64):
    return torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def object_masks(count, height=48, width=64):
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    masks[:, 10:20, 5:40] = True
    return masks


def test_embeddings_are_unit_length(embedder):
    assert torch.allclose(embedder.embed_images(random_images(2, 0)).norm(dim=-1), torch.ones(2))
    assert torch.allclose(embedder.embed_texts(["a cat", "a dog on a beach"]).norm(dim=-1), torch.ones(2))


def test_clip_score_is_100_times_the_cosine_clamped_at_zero(embedder, tiny_clip):
    images, prompts = random_images(3, 1), ["a cat", "a red car", "a chair in a room"]
    with torch.no_grad():
        image_features = tiny_clip.encode_image(embedder.clip_pixels(images))
        text_features = tiny_clip.encode_text(open_clip.get_tokenizer("ViT-B-32")(prompts))
    cosine = torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1)
    assert (cosine < 0).all()  # this random model happens to point texts away from images: all clamp to 0
    torch.testing.assert_close(clip_score(embedder, images, prompts), torch.zeros(3))
    # Negating the text projection negates every cosine, so the same pairs now score 100 * |cosine|.
    flipped_clip = copy.deepcopy(tiny_clip)
    flipped_clip.text_projection.data.neg_()
    flipped = CLIPEmbedder(flipped_clip, open_clip.get_tokenizer("ViT-B-32"))
    # Tolerance 1e-4 on scores of order 30: float32 embeddings, normalised in a different order.
    torch.testing.assert_close(clip_score(flipped, images, prompts), -100 * cosine, rtol=0, atol=1e-4)


def test_clip_score_spans_0_to_100(embedder, monkeypatch):
    images = random_images(2, 2)
    image_embeddings = embedder.embed_images(images)
    monkeypatch.setattr(embedder, "embed_texts", lambda prompts: image_embeddings)  # a perfectly matching text
    torch.testing.assert_close(clip_score(embedder, images, ["x", "y"]), torch.full((2,), 100.0))
    monkeypatch.setattr(embedder, "embed_texts", lambda prompts: -image_embeddings)  # the opposite text
    torch.testing.assert_close(clip_score(embedder, images, ["x", "y"]), torch.zeros(2))
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        clip_score(embedder, images, ["x"])


def test_object_similarity_of_an_unchanged_image_is_one(embedder):
    images = random_images(2, 3)
    # Tolerance 1e-5: a unit vector's dot product with itself in float32.
    torch.testing.assert_close(object_similarity(embedder, images, images.clone(), object_masks(2)),
                               torch.ones(2), rtol=0, atol=1e-5)


def test_object_similarity_only_sees_the_object_box(embedder):
    images = random_images(1, 4)
    new_background = random_images(1, 5)
    box_rows, box_columns = slice(10, 20), slice(5, 40)
    new_background[..., box_rows, box_columns] = images[..., box_rows, box_columns]  # same object, new background
    torch.testing.assert_close(object_similarity(embedder, images, new_background, object_masks(1)),
                               torch.ones(1), rtol=0, atol=1e-5)
    repainted = images.clone()
    repainted[..., 12:18, 10:30] = 1.0
    assert object_similarity(embedder, images, repainted, object_masks(1)).item() < 1 - 1e-4


def test_object_box_and_square_crop():
    mask = torch.zeros(20, 30, dtype=torch.bool)
    mask[3, 4] = mask[7, 15] = True
    assert mask_bounding_box(mask) == (3, 8, 4, 16)
    crop = square_object_crop(torch.rand(3, 20, 30), mask_bounding_box(mask))
    assert crop.shape == (3, 12, 12)  # 5 x 12 box, padded to 12 x 12
    with pytest.raises(ValueError, match="empty"):
        mask_bounding_box(torch.zeros(4, 4, dtype=torch.bool))


def test_loads_a_local_checkpoint_through_open_clip(tiny_clip, tmp_path):
    config_path = tmp_path / "salient-outpaint-tiny-test-clip.json"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config_path)  # registers the architecture under the file's stem
    torch.save(tiny_clip.state_dict(), tmp_path / "tiny_clip.pt")
    loaded = load_clip_embedder("salient-outpaint-tiny-test-clip", tmp_path / "tiny_clip.pt")
    images = random_images(2, 6)
    reference = CLIPEmbedder(tiny_clip, open_clip.get_tokenizer("ViT-B-32"))
    torch.testing.assert_close(clip_score(loaded, images, ["a", "b"]), clip_score(reference, images, ["a", "b"]))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_clip_embedder("ViT-H-14", tmp_path / "missing.pt")
