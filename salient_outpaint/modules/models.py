"""Builds the four networks of one configuration."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .controlnet import ControlNet
from .text import TextEncoder
from .unet import UNet
from .vae import AutoencoderKL


@dataclass
class Models:
    config: ModelConfig
    vae: AutoencoderKL
    unet: UNet
    text_encoder: TextEncoder
    controlnet: ControlNet | None

    def components(self) -> dict[str, nn.Module]:
        named = {"vae": self.vae, "unet": self.unet, "text_encoder": self.text_encoder,
                 "controlnet": self.controlnet}
        return {name: module for name, module in named.items() if module is not None}


NETWORKS = {"vae": lambda config: AutoencoderKL(config.vae), "unet": lambda config: UNet(config.unet),
            "text_encoder": lambda config: TextEncoder(config.text)}


def build_models(config: ModelConfig, with_controlnet: bool = True) -> Models:
    """Random-weight networks; the ControlNet starts as a copy of the U-Net's encoder."""
    unet = NETWORKS["unet"](config)
    return Models(config=config, vae=NETWORKS["vae"](config), unet=unet, text_encoder=NETWORKS["text_encoder"](config),
                  controlnet=ControlNet.from_unet(unet, config.controlnet) if with_controlnet else None)


def empty_models(config: ModelConfig, with_controlnet: bool = True, dtype: torch.dtype = torch.float32) -> Models:
    """The networks' structure on the meta device, in `dtype`: no memory, no initialisation. Loading
    (checkpoints/loader.py) then assigns each tensor as it reads it; a network no checkpoint fills is
    made with `build_network`."""
    with torch.device("meta"):
        models = build_models(config, with_controlnet)
    for module in models.components().values():
        module.to(dtype)
    return models


def build_network(models: Models, name: str, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    """A random-weight network for `models` (one no checkpoint filled), made on `device` in `dtype`;
    a ControlNet is a copy of `models.unet`'s encoder."""
    if name == "controlnet":
        return ControlNet.from_unet(models.unet, models.config.controlnet, dtype)
    with torch.device(device):
        return NETWORKS[name](models.config).to(dtype)


def dtype_of(module: nn.Module) -> torch.dtype:
    """The dtype a network is stored in: training may keep frozen networks in bf16/fp16."""
    return next(module.parameters()).dtype


def compile_models(models: Models, backend: str = "inductor") -> Models:
    """torch.compile, in place, the networks that run at every step: the U-Net, the ControlNet and the
    VAE's encoder and decoder (its entry points are encode/decode, not forward). Parameter names are
    unchanged, so checkpoints still save and load. `fullgraph`: a graph break is an error, not a
    silent slow path (tests/test_compile.py keeps them out; it uses the quick `eager` backend)."""
    networks = [models.unet, models.controlnet, models.vae.encoder, models.vae.decoder]
    for network in networks:
        if network is not None:
            network.compile(fullgraph=True, backend=backend)
    return models
