"""Validation images during training: a grid a person can look at to see what the run has learned.

    vae stage:            inputs | reconstructions
    unet/controlnet:      inputs | object masks | samples (20 DPM-Solver++ steps, guidance 5)
Always the same first items of the dataset (epoch 0), so grids of successive steps compare.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.images import make_grid, mask_as_image, save_image
from ..modules.models import Models
from ..pipeline import OutpaintPipeline, SamplingOptions

VALIDATION_ITEMS = 4


@torch.no_grad()
def validation_grid(models: Models, stage: str, dataset, device: torch.device, seed: int) -> torch.Tensor:
    dataset.set_epoch(0)
    items = [dataset[index] for index in range(min(VALIDATION_ITEMS, len(dataset)))]
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["mask"] for item in items])
    modes = {name: module.training for name, module in models.components().items()}
    try:
        if stage == "vae":
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
        for name, module in models.components().items():
            module.train(modes[name])


def save_validation_grid(models: Models, stage: str, dataset, device: torch.device, seed: int,
                         out_dir: str | Path, step: int) -> Path:
    path = Path(out_dir) / "validation" / f"step_{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(validation_grid(models, stage, dataset, device, seed), path)
    return path
