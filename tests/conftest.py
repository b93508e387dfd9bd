"""Helpers that more than one test module uses: image and folder makers, a TOY training run, and the TOY
U-Net with and without its ControlNet, and what a test that launches processes needs."""
import os
import socket
from dataclasses import replace

import torch
from PIL import Image

from salient_outpaint.training.config import TrainConfig
from salient_outpaint.training.loop import Trainer, run
from salient_outpaint.training.run_folder import run_folder


def write_pair(images, masks, name, size=(48, 40), suffix=".jpg"):
    """A red square object on blue, off-centre (so a flip moves it), and its mask."""
    width, height = size
    image = Image.new("RGB", size, (0, 0, 255))
    mask = Image.new("L", size, 0)
    box = (width // 4, height // 4, width // 4 + 12, height // 4 + 12)
    image.paste((255, 0, 0), box)
    mask.paste(255, box)
    image.save(images / f"{name}{suffix}", quality=100)
    mask.save(masks / f"{name}.png")


def salient_folder(root, count=4, images="images", masks="masks"):
    """A salient-object folder (images/ + masks/) of `count` pairs from `write_pair`, named img0, img1, ..."""
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    for index in range(count):
        write_pair(root / images, root / masks, f"img{index}")
    return root


ORIENTATION = 0x0112
# EXIF orientation -> how the stored pixels are turned to be shown (torch.rot90's k: quarter turns
# counter-clockwise). 6: the camera was held upright, the sensor stored the scene turned left.
SHOWN_BY_QUARTER_TURNS = {6: -1, 8: 1, 3: 2}


def scene(width, height):
    """(3, H, W) uint8: a red object in the top-left quarter on a blue-green gradient, and its (1, H, W) mask."""
    rows = torch.linspace(0, 255, height)[:, None].expand(height, width)
    image = torch.stack([torch.zeros(height, width), rows, 255 - rows]).round().to(torch.uint8)
    mask = torch.zeros(1, height, width, dtype=torch.uint8)
    top, left = height // 8, width // 8
    image[:, top:height // 2, left:width // 2] = torch.tensor([230, 20, 20], dtype=torch.uint8)[:, None, None]
    mask[:, top:height // 2, left:width // 2] = 255
    return image, mask


def pil(tensor):
    """(C, H, W) uint8, C = 1 or 3 (or 4) -> a PIL image of the same pixels."""
    array = tensor.permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def save_as_stored(tensor, path, orientation, **options):
    """Store `tensor` (what a viewer must show) as a camera would: pixels turned, orientation in EXIF."""
    stored = torch.rot90(tensor, -SHOWN_BY_QUARTER_TURNS[orientation], dims=(1, 2))
    image = pil(stored)
    exif = image.getexif()
    exif[ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes(), **options)


def toy_config(tmp_path, **overrides) -> TrainConfig:
    """A 4-step ControlNet run of batch 2 on 32 toy scenes, checkpointed every 2 steps, in tmp_path/run."""
    base = TrainConfig(stage="controlnet", preset="toy", data=("toy:32",), out_dir=str(tmp_path / "run"),
                       resolution=64, steps=4, batch_size=2, learning_rate=1e-3, log_every=1, checkpoint_every=2,
                       seed=3)
    return replace(base, **overrides)


def fit(trainer: Trainer) -> dict:
    """What train() does with a Trainer: own the output folder, resume if asked, run."""
    with run_folder(trainer.config, trainer.process) as state:
        return run(trainer, state)


def take_steps(trainer: Trainer, steps: int) -> list[float]:
    """The losses of steps 0 .. steps - 1, reading batches as a run does."""
    batches = trainer.batches(0)
    return [trainer.step(step, next(batches)) for step in range(steps)]


def toy_unet_with_and_without_controlnet(networks, timesteps):
    """The TOY U-Net's output on random inputs with the ControlNet's residuals, and without them."""
    latent_input, context = torch.randn(2, 9, 16, 16), torch.randn(2, 77, 64)
    with torch.no_grad():
        residuals = networks.controlnet(latent_input, timesteps, context, torch.rand(2, 3, 64, 64))
        controlled = networks.unet(latent_input, timesteps, context, residuals)
        return controlled, networks.unet(latent_input, timesteps, context)


SINGLE_THREADED = {**os.environ, "OMP_NUM_THREADS": "1"}  # as torchrun runs each process: alike rounding


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]
