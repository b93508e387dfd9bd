"""The 9-channel inpainting U-Net of SD2-inpainting ("SI2").

Input: noisy latents (4) + the mask of the region to paint (1) + latents of the image with
that region blanked (4), concatenated to (B, 9, h, w). Output: the predicted noise (or v),
(B, 4, h, w). A ControlNet may add residuals to the skip connections and the middle block.

Layout (SD2 sizes, 64x64 latents):
  conv_in 9->320 | down levels 320@64, 640@32, 1280@16 (each with cross-attention), 1280@8
  | middle 1280@8 | up levels mirroring the down levels, each consuming skips | conv_out 320->4

Shapes in the comments: B images, (h, w) the latent grid (the image's H/8 x W/8 for SD2), C_i the
width of level i (`block_out_channels[i]`; SD2: C_0 = 320, C_1 = 640, C_2 = C_3 = 1280) and C_last the
deepest (SD2: 1280). Each level but the last halves the grid (rounding up), so SD2's middle runs at h/8.
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
    """What a ControlNet hands the U-Net: one tensor per skip connection, plus one for the middle; or,
    for a cheap step (see UNet.forward's `deep`), the shallowest level's skips alone and no middle."""
    down: list[torch.Tensor]
    mid: torch.Tensor | None

    def to(self, dtype: torch.dtype) -> ControlResiduals:
        """The residuals in the U-Net's dtype, when the two networks are stored in different ones."""
        return ControlResiduals(down=[residual.to(dtype) for residual in self.down],
                                mid=None if self.mid is None else self.mid.to(dtype))


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

    def forward(self, x, time_embedding, context, downsample: bool = True):
        """x (B, C_in, h, w), time_embedding (B, 4 * C_0), context (B, 77, D) -> x and the skips
        (without the downsampler's, when `downsample` is False: a cheap step needs the level's own alone)."""
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, time_embedding)  # (B, C_out, h, w)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)  # (B, C_out, h, w): each pixel a token, attending to the text
            skips.append(x)
        if downsample and hasattr(self, "downsamplers"):
            x = self.downsamplers[0](x)  # (B, C_out, h/2, w/2), rounded up
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
        """(B, C_last, h, w) -> (B, C_last, h, w), at the deepest level's grid."""
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
        """x (B, C_x, h, w) and layers_per_block + 1 skips (B, C_skip, h, w) -> (B, C_out, 2h, 2w), or
        (B, C_out, h, w) at the shallowest level, which does not upsample."""
        # The deepest skip is consumed first; `skips` is left untouched so checkpointing can rerun this.
        for i, (resnet, skip) in enumerate(zip(self.resnets, reversed(skips), strict=True)):
            x = resnet(torch.cat([x, skip], dim=1), time_embedding)  # (B, C_x + C_skip, h, w) -> (B, C_out, h, w)
            if hasattr(self, "attentions"):
                x = self.attentions[i](x, context)  # (B, C_out, h, w)
        if hasattr(self, "upsamplers"):
            x = self.upsamplers[0](x, upsample_size)  # (B, C_out, 2h, 2w), or the next skip's size when odd
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
        return self.time_embedding(sinusoid)  # (B, 4 * C_0)

    def run_block(self, block: nn.Module, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def encode(self, x: torch.Tensor, time_embedding: torch.Tensor, context: torch.Tensor):
        """conv_in output (B, C_0, h, w) -> middle-block output (B, C_last, h/8, w/8) for SD2's four
        levels, and the skip tensors (SD2: 12, see `encoder_skip_channels`)."""
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = self.run_block(block, x, time_embedding, context)  # level i: (B, C_i, h/2^(i+1), ...)
            skips += block_skips
        return self.run_block(self.mid_block, x, time_embedding, context), skips

    def encode_shallow(self, x: torch.Tensor, time_embedding: torch.Tensor,
                       context: torch.Tensor) -> list[torch.Tensor]:
        """conv_in output (B, C_0, h, w) -> the skips the U-Net's last up level reads: conv_in's and the
        first down level's own (SD2: 3 at (B, 320, h, w)), without going deeper."""
        _, level_skips = self.run_block(self.down_blocks[0], x, time_embedding, context, False)
        return [x, *level_skips]


class UNet(DiffusionEncoder):
    def __init__(self, config: UNetConfig):
        super().__init__(config)
        channels = config.block_out_channels
        # Skip-channel bookkeeping. The decoder takes the encoder's skips back in reverse order,
        # layers_per_block + 1 per level: the level's own residual-block outputs (the last first), then the
        # skip that entered the level (the shallower level's downsampler output, or conv_in's), which is as
        # wide as that shallower level. Each residual block reads x and its skip concatenated; x is as wide
        # as the deeper level for the level's first block (the middle block's or the previous up level's
        # output), then as wide as the level itself. SD2's in_channels, from the deepest level:
        # 2560 2560 2560 | 2560 2560 1920 | 1920 1280 960 | 960 640 640.
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
                control: ControlResiduals | None = None, deep: torch.Tensor | None = None,
                keep_deep: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """latent_input (B, 9, h, w), timesteps (B,) or scalar, context (B, 77, D) -> (B, 4, h, w).

        Feature reuse across steps (DeepCache, Ma et al. 2023): `keep_deep` also returns the deep
        features, the input of the last up level (B, C_1, h, w), computed from every level below; a
        later, cheap step given them as `deep` runs only conv_in, the first down level and the last up
        level, with `control` holding the residuals of those shallow skips alone."""
        time_embedding = self.embed_timesteps(timesteps, latent_input.shape[0], latent_input.dtype)  # (B, 4 * C_0)
        x = self.conv_in(latent_input)  # (B, C_0, h, w)
        if deep is not None:
            skips = self.encode_shallow(x, time_embedding, context)  # SD2: 3 x (B, C_0, h, w)
            if control is not None:
                skips = [skip + residual for skip, residual in zip(skips, control.down, strict=True)]
            return self.decode_shallowest(deep, skips, time_embedding, context)
        x, skips = self.encode(x, time_embedding, context)  # (B, C_last, h/8, w/8) for SD2, and 12 skips
        if control is not None:  # one residual of each skip's shape, and one of the middle's
            skips = [skip + residual for skip, residual in zip(skips, control.down, strict=True)]
            x = x + control.mid
        for block in self.up_blocks[:-1]:
            block_skips = skips[-len(block.resnets):]
            skips = skips[:-len(block.resnets)]
            # Upsample to the size of the next skip, so odd latent sizes still line up.
            upsample_size = skips[-1].shape[-2:]
            # up level i -> (B, C_i, h/2^(i-1), w/2^(i-1)), the last of these (level 1) -> (B, C_1, h, w)
            x = self.run_block(block, x, block_skips, time_embedding, context, upsample_size)
        prediction = self.decode_shallowest(x, skips, time_embedding, context)
        return (prediction, x) if keep_deep else prediction

    def decode_shallowest(self, x: torch.Tensor, skips: list[torch.Tensor], time_embedding: torch.Tensor,
                          context: torch.Tensor) -> torch.Tensor:
        """The last up level (level 0, which reads conv_in's and the first level's skips) and the output:
        x (B, C_1, h, w) -> (B, 4, h, w)."""
        x = self.run_block(self.up_blocks[-1], x, skips, time_embedding, context, None)  # (B, C_0, h, w)
        return self.conv_out(F.silu(self.conv_norm_out(x)))  # (B, C_0, h, w) -> (B, 4, h, w)
