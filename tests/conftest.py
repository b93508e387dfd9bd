"""Helpers shared by several test modules: a TOY training run, and the TOY U-Net with and without
its ControlNet."""
from dataclasses import replace

import torch

from salient_outpaint.training.config import TrainConfig
from salient_outpaint.training.loop import Trainer, run
from salient_outpaint.training.run_folder import run_folder


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
