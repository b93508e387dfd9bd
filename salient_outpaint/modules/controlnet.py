"""ControlNet: a trainable copy of the U-Net's encoder half that steers the frozen U-Net.

It reads the same 9-channel input as the U-Net plus a control image (here the inverted
salient-object mask as 3 channels, white = background to paint, as in the authors' release;
the ablations also try the 4 noisy latents alone, and the masked object as the control image),
and returns one residual per U-Net skip connection and one for the middle block. Every
residual passes a 1x1 convolution initialised to zero, so at the start of training the
ControlNet adds nothing and the system is exactly the frozen SI2.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ControlNetConfig, UNetConfig
from .layers import zero_module
from .unet import ControlResiduals, DiffusionEncoder, UNet, encoder_skip_channels


class ConditioningEmbedding(nn.Module):
    """Small conv net taking the control image (B, 3, H, W) to the latent grid (B, C_0, H/f, W/f).
    Each level is a 3x3 conv and a strided 3x3 conv; the last conv starts at zero."""

    def __init__(self, conditioning_channels: int, embedding_channels: tuple[int, ...], out_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(conditioning_channels, embedding_channels[0], 3, padding=1)
        blocks = []
        for channels, next_channels in zip(embedding_channels[:-1], embedding_channels[1:]):
            blocks.append(nn.Conv2d(channels, channels, 3, padding=1))
            blocks.append(nn.Conv2d(channels, next_channels, 3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(embedding_channels[-1], out_channels, 3, padding=1)  # zeroed by the ControlNet

    def forward(self, control_image: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(control_image))  # (B, E_0, H, W), E = embedding_channels (SD2: 16, 32, 96, 256)
        for block in self.blocks:  # in pairs: (B, E_i, .) at the same size, then (B, E_i+1, .) at half the size
            x = F.silu(block(x))
        return self.conv_out(x)  # (B, E_last, H/f, W/f) -> (B, C_0, H/f, W/f), the U-Net's latent grid


class ControlNet(DiffusionEncoder):
    # The layers the U-Net has no counterpart of; the rest is a copy of the U-Net's encoder.
    OWN_LAYERS = ("controlnet_cond_embedding", "controlnet_down_blocks", "controlnet_mid_block")

    def __init__(self, unet_config: UNetConfig, config: ControlNetConfig):
        super().__init__(replace(unet_config, in_channels=config.in_channels))
        self.controlnet_config = config
        self.controlnet_cond_embedding = ConditioningEmbedding(
            config.conditioning_channels, config.conditioning_embedding_channels, unet_config.block_out_channels[0])
        self.controlnet_down_blocks = nn.ModuleList([
            nn.Conv2d(channels, channels, 1) for channels in encoder_skip_channels(unet_config)])
        channels = unet_config.block_out_channels[-1]
        self.controlnet_mid_block = nn.Conv2d(channels, channels, 1)
        self.zero_outputs()

    def zero_outputs(self) -> None:
        """Every path out of the ControlNet starts at zero: at first it adds nothing to the U-Net."""
        for layer in (self.controlnet_cond_embedding.conv_out, self.controlnet_down_blocks, self.controlnet_mid_block):
            zero_module(layer)

    @classmethod
    def from_unet(cls, unet: UNet, config: ControlNetConfig, dtype: torch.dtype | None = None) -> "ControlNet":
        """A ControlNet whose encoder starts as an exact copy of the U-Net's (in `dtype`, default the
        U-Net's); one reading fewer channels (the noisy latents alone) copies their part of conv_in. It
        is built on the meta device and each encoder tensor is copied in once: only its own layers are
        initialised."""
        weight = unet.conv_in.weight
        dtype = dtype or weight.dtype
        with torch.device("meta"):
            controlnet = cls(unet.config, config)
        if weight.is_meta:  # the structure alone (models.empty_models): nothing to copy or initialise
            return controlnet.to(dtype)
        for name in cls.OWN_LAYERS:
            own = getattr(controlnet, name).to_empty(device=weight.device)
            for layer in own.modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        controlnet.zero_outputs()
        encoder_weights = {key: value.detach().to(dtype=dtype, copy=True) for key, value in unet.state_dict().items()
                           if key.split(".")[0] in ("conv_in", "time_embedding", "down_blocks", "mid_block")}
        encoder_weights["conv_in.weight"] = encoder_weights["conv_in.weight"][:, :config.in_channels].contiguous()
        missing, unexpected = controlnet.load_state_dict(encoder_weights, strict=False, assign=True)
        assert not unexpected and all(key.startswith(cls.OWN_LAYERS) for key in missing)
        return controlnet.to(dtype)

    def forward(self, latent_input: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                control_image: torch.Tensor, conditioning_scale: float = 1.0,
                shallow: bool = False) -> ControlResiduals:
        """latent_input (B, in_channels, h, w), control_image (B, 3, H, W) in [0, 1] -> residuals for the U-Net.
        Shapes as in unet.py: C_0 the U-Net's first width (SD2: 320), C_last its deepest (SD2: 1280).
        `shallow`: for a cheap step of feature reuse (UNet.forward's `deep`), the residuals of the
        shallowest skips alone, from conv_in, the control image and the first level: the ControlNet still
        steers the cheap step with what it sees now, at a fraction of its cost."""
        time_embedding = self.embed_timesteps(timesteps, latent_input.shape[0], latent_input.dtype)  # (B, 4 * C_0)
        # Both (B, C_0, h, w): the control image enters where the U-Net's input does.
        x = self.conv_in(latent_input) + self.controlnet_cond_embedding(control_image.to(latent_input.dtype))
        if shallow:
            skips = self.encode_shallow(x, time_embedding, context)  # SD2: 3 x (B, C_0, h, w)
            down = [zero_conv(skip) * conditioning_scale for zero_conv, skip in zip(self.controlnet_down_blocks, skips)]
            return ControlResiduals(down=down, mid=None)
        x, skips = self.encode(x, time_embedding, context)  # (B, C_last, h/8, w/8) for SD2, and 12 skips
        # A 1x1 conv per skip: each residual has its skip's shape (widths: `encoder_skip_channels`).
        down = [zero_conv(skip) * conditioning_scale for zero_conv, skip in zip(self.controlnet_down_blocks, skips)]
        return ControlResiduals(down=down, mid=self.controlnet_mid_block(x) * conditioning_scale)  # mid like x
