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


def build_models(config: ModelConfig, with_controlnet: bool = True) -> Models:
    """Random-weight networks; the ControlNet starts as a copy of the U-Net's encoder."""
    unet = UNet(config.unet)
    return Models(config=config, vae=AutoencoderKL(config.vae), unet=unet, text_encoder=TextEncoder(config.text),
                  controlnet=ControlNet.from_unet(unet, config.controlnet) if with_controlnet else None)


def dtype_of(module: nn.Module) -> torch.dtype:
    """The dtype a network is stored in: training may keep frozen networks in bf16/fp16."""
    return next(module.parameters()).dtype
