"""Validation images during training: a grid a person can look at to see what the run has learned.

    vae, decoder stages:  inputs | reconstructions
    unet/controlnet:      inputs | object masks | samples (20 DPM-Solver++ steps, guidance 5)
The items are the user's own (`--validation-image`, `--validation-mask`, `--validation-prompt`,
read and checked before step 0, centre-cropped to --resolution) or else the first items of the
dataset (epoch 0); always the same ones, so grids of successive steps compare.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.images import load_image, load_mask, make_grid, mask_as_image, resize_shorter_side, save_image
from ..data.masks import binarize
from ..inputs import check_mask_size
from ..modules.models import Models
from ..options import SamplingOptions
from ..pipeline import OutpaintPipeline
from .config import AUTOENCODER_STAGES

VALIDATION_ITEMS = 4


def centre_square(image: torch.Tensor, mask: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, H, W), (1, H, W) -> their centre squares at size x size, the mask binarised."""
    both = resize_shorter_side(torch.cat([image, mask])[None], size, mode="bilinear")[0]  # (4, H', W')
    top, left = (both.shape[-2] - size) // 2, (both.shape[-1] - size) // 2
    both = both[:, top:top + size, left:left + size]
    return both[:3].clamp(-1, 1), binarize(both[3:])


def user_items(images: tuple[str, ...], masks: tuple[str, ...], prompts: tuple[str, ...], size: int) -> list[dict]:
    """The user's validation images, masks and prompts as dataset items; one-line errors for
    missing, unreadable or mismatched files."""
    items = []
    for index, (image_path, mask_path) in enumerate(zip(images, masks)):
        image, mask = load_image(image_path), load_mask(mask_path)  # (3, H, W), (1, H, W)
        check_mask_size(mask.shape[-2:], image.shape[-2:], mask=f"--validation-mask {mask_path}",
                        image=f"its --validation-image {image_path}")
        image, mask = centre_square(image, mask, size)
        items.append({"image": image, "mask": mask, "caption": prompts[index] if prompts else ""})
    return items


def dataset_items(dataset) -> list[dict]:
    """The first items of the dataset as epoch 0 draws them (shards: in pattern order)."""
    if hasattr(dataset, "first_items"):
        return dataset.first_items(VALIDATION_ITEMS)
    dataset.set_epoch(0)
    return [dataset[index] for index in range(min(VALIDATION_ITEMS, len(dataset)))]


@torch.no_grad()
def validation_grid(models: Models, stage: str, items: list[dict], device: torch.device, seed: int) -> torch.Tensor:
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["mask"] for item in items])
    # every submodule's own mode: a network may hold frozen parts in eval (training/loop.py: FROZEN_PARTS)
    modes = {module: module.training for network in models.components().values() for module in network.modules()}
    try:
        if stage in AUTOENCODER_STAGES:
            models.vae.eval()
            outputs = models.vae.decode(models.vae.encode(images.to(device, torch.float32)).mean).float().cpu()
            return make_grid([*images, *outputs.clamp(-1, 1)], columns=len(items))
        pipeline = OutpaintPipeline(models, device)
        generator = torch.Generator().manual_seed(seed)
        options = SamplingOptions(steps=20, guidance=5.0)
        samples = [pipeline(item["image"], item["mask"], item["caption"], options=options, generator=generator)[0]
                   for item in items]
        return make_grid([*images, *mask_as_image(masks), *samples], columns=len(items))
    finally:
        for module, training in modes.items():
            module.training = training


def save_validation_grid(grid: torch.Tensor, out_dir: str | Path, step: int) -> Path:
    path = Path(out_dir) / "validation" / f"step_{step:07d}.png"
    save_image(grid, path)  # makes the folder
    return path
