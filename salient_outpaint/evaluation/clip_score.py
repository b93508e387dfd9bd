"""CLIP score (does the image show the prompt?) and object similarity (is the object still itself?).

  clip_score         100 * max(cos(image embedding, prompt embedding), 0), per image
  object_similarity  cos(embedding of the object's box in the input, embedding of the same box
                     in the generated image): drops when the object is repainted or grown

Embeddings come from an open_clip model loaded from a local checkpoint (`load_clip_embedder`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.images import resize_shorter_side
from ..data.masks import check_bool_mask

CLIP_SCORE_SCALE = 100.0
# Padding that makes an object's box square before resizing: 0 in [-1, 1] is mid grey.
SQUARE_PAD_VALUE = 0.0


class CLIPEmbedder(nn.Module):
    """An open_clip model with its tokenizer and image preprocessing: images and prompts -> unit embeddings."""

    def __init__(self, model: nn.Module, tokenizer: Callable[[Sequence[str]], torch.Tensor]):
        super().__init__()
        self.model = model.eval()
        self.tokenizer = tokenizer
        preprocess = open_clip.get_model_preprocess_cfg(model)
        size = preprocess["size"]
        self.image_size = size if isinstance(size, int) else size[0]
        mean = preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)  # models built by hand carry no preprocess config
        std = preprocess.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("pixel_mean", torch.tensor(mean)[None, :, None, None], persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std)[None, :, None, None], persistent=False)

    def clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, S, S) as CLIP was trained: shorter side to S, centre crop, normalise."""
        resized = resize_shorter_side(images, self.image_size, mode="bicubic")
        top = (resized.shape[-2] - self.image_size) // 2
        left = (resized.shape[-1] - self.image_size) // 2
        cropped = resized[..., top:top + self.image_size, left:left + self.image_size]
        return ((cropped.clamp(-1, 1) + 1) / 2 - self.pixel_mean) / self.pixel_std

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, D) unit-length image embeddings."""
        return F.normalize(self.model.encode_image(self.clip_pixels(images)).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """B prompts -> (B, D) unit-length text embeddings."""
        tokens = self.tokenizer(list(prompts)).to(self.pixel_mean.device)  # (B, context_length)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)


def load_clip_embedder(model_name: str, checkpoint_path: str | Path,
                       device: str | torch.device = "cpu") -> CLIPEmbedder:
    """An open_clip architecture by name (e.g. "ViT-H-14", "ViT-B-32") with weights from a local file."""
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"no CLIP checkpoint at {checkpoint_path}; pass the local path of the open_clip "
                                f"weights for {model_name} (e.g. open_clip_pytorch_model.bin of the model's release)")
    model = open_clip.create_model(model_name, pretrained=str(checkpoint_path), device=device)
    return CLIPEmbedder(model, open_clip.get_tokenizer(model_name)).to(device)


def clip_score(embedder: CLIPEmbedder, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """(B,) CLIP score of each image against its prompt, in [0, 100]."""
    if len(prompts) != len(images):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts; CLIP score pairs them one to one")
    cosine = (embedder.embed_images(images) * embedder.embed_texts(prompts)).sum(dim=-1)
    return CLIP_SCORE_SCALE * cosine.clamp(min=0)


def mask_bounding_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a non-empty (H, W) bool mask, bottom and right exclusive."""
    check_bool_mask(mask, "mask")
    rows, columns = mask.any(dim=1).nonzero(), mask.any(dim=0).nonzero()
    if len(rows) == 0:
        raise ValueError("the object mask is empty, so there is no object to crop")
    return int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1


def square_object_crop(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """(3, H, W) -> (3, S, S): the box, padded to a square so that resizing keeps the object's shape."""
    top, bottom, left, right = box
    crop = image[:, top:bottom, left:right]
    height, width = crop.shape[-2:]
    side = max(height, width)
    pad_rows, pad_columns = side - height, side - width
    return F.pad(crop, (pad_columns // 2, pad_columns - pad_columns // 2, pad_rows // 2, pad_rows - pad_rows // 2),
                 value=SQUARE_PAD_VALUE)


def object_similarity(embedder: CLIPEmbedder, input_images: torch.Tensor, generated_images: torch.Tensor,
                      object_masks: torch.Tensor) -> torch.Tensor:
    """(B,) cosine similarity of CLIP embeddings of the object's box (from the input mask) before and after.

    input_images, generated_images: (B, 3, H, W) in [-1, 1]; object_masks: (B, H, W) bool.
    """
    batch, _, height, width = input_images.shape
    if generated_images.shape != input_images.shape or object_masks.shape != (batch, height, width):
        raise ValueError(f"expected input and generated images of one shape (B, 3, H, W) and masks (B, H, W); "
                         f"got {tuple(input_images.shape)}, {tuple(generated_images.shape)} "
                         f"and {tuple(object_masks.shape)}")
    similarities = []
    for input_image, generated_image, mask in zip(input_images, generated_images, object_masks):
        box = mask_bounding_box(mask)
        crops = torch.stack([square_object_crop(input_image, box), square_object_crop(generated_image, box)])
        input_embedding, generated_embedding = embedder.embed_images(crops)
        similarities.append((input_embedding * generated_embedding).sum())
    return torch.stack(similarities)
