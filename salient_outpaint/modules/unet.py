"""The 9-channel inpainting U-Net of SD2-inpainting ("SI2").

Input: noisy latents (4) + the mask of the region to paint (1) + latents of the image with
that region blanked (4), concatenated to (B, 9, h, w). Output: the predicted noise (or v),
(B, 4, h, w). A ControlNet may add residuals to the skip connections and the middle block.

Layout (SD2 sizes, 64x64 latents):
  conv_in 9->320 | down levels 320@64, 640@32, 1280@16 (each with cross-attention), 1280@8
  | middle 1280@8 | up levels mirroring the down levels, each consuming skips | conv_out 320->4
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import UNetConfig
from .layers import Downsample, ResnetBlock, SpatialTransformer, TimestepMLP, Upsample, timestep_embedding

EPS = 1e-5  # GroupNorm epsilon of the U-Net's residual blocks


@dataclass
class ControlResiduals:
    """What a ControlNet hands the U-Net: one tensor per skip connection, plus one for the middle."""
    down: list[torch.Tensor]
    mid: torch.Tensor

    def to(self, dtype: torch.dtype) -> ControlResiduals:
        """The residuals in the U-Net's dtype, when the two networks are stored in different ones."""
        return ControlResiduals(down=[residual.to(dtype) for residual in self.down], mid=self.mid.to(dtype))


class DownBlock(nn.Module):
    """One encoder level. Returns its output and the skip tensors it leaves for the decoder."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, cross_attention: bool,
                 downsample: bool):
        super().__init__()
        time_dim = 4 * config.block_out_channels[0]
        self.resnets = nn.ModuleList([
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, config.norm_groups, EPS, time_dim)
            for i in range(config.layers_per_block)])
        if cross_attention:
            self.attentions = nn.ModuleList([
                SpatialTransformer(out_channels, config.attention_head_dim, config.cross_attention_dim,
                                   config.norm_groups)
                for _ in range(config.layers_per_block)])
        if downsample:
            self.downsamplers = nn.ModuleList([Downsample(out_channels)])

    def forward(self, x, time_embedding, context):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, time_embedding)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
            skips.append(x)
        if hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        channels, time_dim = config.block_out_channels[-1], 4 * config.block_out_channels[0]
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, config.norm_groups, EPS, time_dim)
                                      for _ in range(2)])
        self.attentions = nn.ModuleList([SpatialTransformer(channels, config.attention_head_dim,
                                                            config.cross_attention_dim, config.norm_groups)])

    def forward(self, x, time_embedding, context):
        x = self.resnets[0](x, time_embedding)
        x = self.attentions[0](x, context)
        return self.resnets[1](x, time_embedding)


class UpBlock(nn.Module):
    """One decoder level: each residual block first concatenates one skip tensor."""

    def __init__(self, in_channels: list[int], out_channels: int, config: UNetConfig, cross_attention: bool,
                 upsample: bool):
        super().__init__()
        time_dim = 4 * config.block_out_channels[0]
        self.resnets = nn.ModuleList([ResnetBlock(channels, out_channels, config.norm_groups, EPS, time_dim)
                                      for channels in in_channels])
        if cross_attention:
            self.attentions = nn.ModuleList([
                SpatialTransformer(out_channels, config.attention_head_dim, config.cross_attention_dim,
                                   config.norm_groups)
                for _ in in_channels])
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample(out_channels)])

    def forward(self, x, skips, time_embedding, context, upsample_size):
        # The deepest skip is consumed first; `skips` is left untouched so checkpointing can rerun this.
        for i, (resnet, skip) in enumerate(zip(self.resnets, reversed(skips), strict=True)):
            x = resnet(torch.cat([x, skip], dim=1), time_embedding)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x, upsample_size)
        return x


def encoder_skip_channels(config: UNetConfig) -> list[int]:
    """Channels of every skip tensor the encoder leaves, in the order it leaves them
    (SD2: 12 skips). The ControlNet emits one residual for each."""
    channels = config.block_out_channels
    skips = [channels[0]]  # the output of conv_in
    for level, level_channels in enumerate(channels):
        skips += [level_channels] * config.layers_per_block
        if level < len(channels) - 1:
            skips.append(level_channels)  # the downsampler's output
    return skips


class DiffusionEncoder(nn.Module):
    """The half of the U-Net the ControlNet copies: timestep MLP, conv_in, down levels, middle."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        channels = config.block_out_channels
        self.config = config
        self.gradient_checkpointing = False
        self.conv_in = nn.Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepMLP(channels[0], 4 * channels[0])
        self.down_blocks = nn.ModuleList([
            DownBlock(channels[max(i - 1, 0)], channels[i], config, config.cross_attention_levels[i],
                      downsample=i < len(channels) - 1)
            for i in range(len(channels))])
        self.mid_block = MidBlock(config)

    def embed_timesteps(self, timesteps: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=self.conv_in.weight.device).reshape(-1).expand(batch)
        sinusoid = timestep_embedding(timesteps, self.config.block_out_channels[0]).to(dtype)
        return self.time_embedding(sinusoid)  # (B, 4 * C0)

    def run_block(self, block: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def encode(self, x: torch.Tensor, time_embedding: torch.Tensor, context: torch.Tensor):
        """conv_in output (B, C0, h, w) -> middle-block output and the list of skip tensors."""
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = self.run_block(block, x, time_embedding, context)
            skips += block_skips
        return self.run_block(self.mid_block, x, time_embedding, context), skips


class UNet(DiffusionEncoder):
    def __init__(self, config: UNetConfig):
        super().__init__(config)
        channels = config.block_out_channels
        skip_channels = encoder_skip_channels(config)
        x_channels = channels[-1]
        up_blocks = []
        for level in reversed(range(len(channels))):
            in_channels = []
            for _ in range(config.layers_per_block + 1):
                in_channels.append(x_channels + skip_channels.pop())
                x_channels = channels[level]
            up_blocks.append(UpBlock(in_channels, channels[level], config, config.cross_attention_levels[level],
                                     upsample=level > 0))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.conv_norm_out = nn.GroupNorm(config.norm_groups, channels[0], eps=EPS)
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, 3, padding=1)

    def forward(self, latent_input: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                control: ControlResiduals | None = None) -> torch.Tensor:
        """latent_input (B, 9, h, w), timesteps (B,) or scalar, context (B, 77, D) -> (B, 4, h, w)."""
        time_embedding = self.embed_timesteps(timesteps, latent_input.shape[0], latent_input.dtype)
        x, skips = self.encode(self.conv_in(latent_input), time_embedding, context)
        if control is not None:
            skips = [skip + residual for skip, residual in zip(skips, control.down, strict=True)]
            x = x + control.mid
        for block in self.up_blocks:
            block_skips = skips[-len(block.resnets):]
            skips = skips[:-len(block.resnets)]
            # Upsample to the size of the next skip, so odd latent sizes still line up.
            upsample_size = skips[-1].shape[-2:] if skips else None
            x = self.run_block(block, x, block_skips, time_embedding, context, upsample_size)
        return self.conv_out(F.silu(self.conv_norm_out(x)))
