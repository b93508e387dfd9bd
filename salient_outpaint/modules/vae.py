"""AutoencoderKL: the VAE that moves images (B, 3, H, W) in [-1, 1] to latents (B, 4, H/f, W/f) and back.

Diffusion happens in the latent space; `scaling_factor` rescales the latents to about unit
variance (SD: 0.18215). The encoder predicts a diagonal Gaussian per latent pixel.

Shapes in the comments: C_i the width of level i (`block_out_channels[i]`; SD: 128, 256, 512, 512),
C_last the deepest (SD: 512), f = 2^(levels - 1) the downsampling factor (SD: 8).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import VAEConfig
from .layers import Attention, Downsample, ResnetBlock, Upsample

EPS = 1e-6  # every GroupNorm of the SD VAE uses this epsilon


class DiagonalGaussian:
    """The encoder's output: mean and log-variance per latent channel and pixel."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Drawn where the generator lives (a CPU generator gives the same numbers on any device).
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def kl(self) -> torch.Tensor:
        """KL divergence to the standard normal, summed over latent dimensions, (B,)."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class VAEAttention(Attention):
    """Single-head self-attention over all pixels, used once in each middle block."""

    def __init__(self, channels: int, groups: int):
        super().__init__(channels, heads=1, head_dim=channels, qkv_bias=True)
        self.group_norm = nn.GroupNorm(groups, channels, eps=EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.group_norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        attended = super().forward(tokens)
        return x + attended.transpose(1, 2).reshape(batch, channels, height, width)


class VAEMidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups, EPS) for _ in range(2)])
        self.attentions = nn.ModuleList([VAEAttention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))  # (B, C, h, w) throughout


class VAEBlock(nn.Module):
    """One resolution level: residual blocks, then optionally a down- or upsampler."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int,
                 resample: str | None):
        super().__init__()
        self.resnets = nn.ModuleList([
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups, EPS)
            for i in range(num_layers)])
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample(out_channels, asymmetric_padding=True)])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample(out_channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)  # (B, out_channels, h, w)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)  # (B, out_channels, h/2, w/2)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x)  # (B, out_channels, 2h, 2w)
        return x


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        channels, groups = config.block_out_channels, config.norm_groups
        self.conv_in = nn.Conv2d(config.image_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            VAEBlock(channels[max(i - 1, 0)], channels[i], config.layers_per_block, groups,
                     resample="down" if i < len(channels) - 1 else None)
            for i in range(len(channels))])
        self.mid_block = VAEMidBlock(channels[-1], groups)
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=EPS)
        self.conv_out = nn.Conv2d(channels[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(image)  # (B, 3, H, W) -> (B, C_0, H, W)
        # Level i -> (B, C_i, H/2^(i+1), W/2^(i+1)); the last does not halve: (B, C_last, H/f, W/f).
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)  # (B, C_last, H/f, W/f)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 2 * latent_channels, H/f, W/f): mean, log-variance


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        channels, groups = config.block_out_channels[::-1], config.norm_groups
        self.conv_in = nn.Conv2d(config.latent_channels, channels[0], 3, padding=1)
        self.mid_block = VAEMidBlock(channels[0], groups)
        # The decoder mirrors the encoder with one extra residual block per level.
        self.up_blocks = nn.ModuleList([
            VAEBlock(channels[max(i - 1, 0)], channels[i], config.layers_per_block + 1, groups,
                     resample="up" if i < len(channels) - 1 else None)
            for i in range(len(channels))])
        self.conv_norm_out = nn.GroupNorm(groups, channels[-1], eps=EPS)
        self.conv_out = nn.Conv2d(channels[-1], config.image_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(latents))  # (B, 4, H/f, W/f) -> (B, C_last, H/f, W/f)
        # The levels in reverse, each but the last doubling the grid: (B, C_0, H, W) at the end.
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, 3, H, W)


class AutoencoderKL(nn.Module):
    """Encoder and decoder with their 1x1 convolutions, used through `encode` and `decode`: each caller
    (the pipeline, the training objective, validation) draws from the posterior as it needs."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quant_conv = nn.Conv2d(2 * config.latent_channels, 2 * config.latent_channels, 1)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)

    def encode(self, image: torch.Tensor) -> DiagonalGaussian:
        """(B, 3, H, W) in [-1, 1] -> posterior over unscaled latents (B, 4, H/f, W/f)."""
        return DiagonalGaussian(self.quant_conv(self.encoder(image)))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, 4, H/f, W/f) -> image (B, 3, H, W), roughly in [-1, 1]."""
        return self.decoder(self.post_quant_conv(latents))
