"""The building blocks shared by the VAE, the U-Net and the ControlNet.

Parameter names follow the diffusers layout (`norm1`, `conv1`, `to_q`, ...), the
de-facto reference for these networks, so that checkpoints in that format load
with a near-identity key map. Other formats are remapped in `checkpoints/`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps, (B,) -> (B, dim), laid out [cos | sin] as in SD."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                                  device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepMLP(nn.Module):
    """Lifts the sinusoidal embedding to the width the residual blocks are conditioned on."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(embedding)))


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice with a skip; optionally shifted by a timestep embedding."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, eps: float,
                 time_embedding_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        if time_embedding_dim is not None:
            self.time_emb_proj = nn.Linear(time_embedding_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if time_embedding is not None:
            h = h + self.time_emb_proj(F.silu(time_embedding))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.conv_shortcut(x) if hasattr(self, "conv_shortcut") else x
        return shortcut + h


class Attention(nn.Module):
    """Multi-head attention from `query_dim` tokens onto `context_dim` tokens (self-attention when
    no context is given); `causal`: each token attends only to itself and the tokens before it."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None,
                 qkv_bias: bool = False, causal: bool = False):
        super().__init__()
        inner_dim = heads * head_dim
        context_dim = context_dim or query_dim
        self.heads, self.causal = heads, causal
        self.to_q = nn.Linear(query_dim, inner_dim, bias=qkv_bias)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=qkv_bias)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=qkv_bias)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, query_dim), context (B, M, context_dim) -> (B, N, query_dim)."""
        context = x if context is None else context
        q, k, v = (rearrange(projected, "b n (heads d) -> b heads n d", heads=self.heads)  # (B, heads, N or M, d)
                   for projected in (self.to_q(x), self.to_k(context), self.to_v(context)))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, heads, N, d)
        return self.to_out[0](rearrange(out, "b heads n d -> b n (heads d)"))


class GEGLU(nn.Module):
    """Linear projection to twice the width, one half gating the other through GELU."""

    def __init__(self, dim: int, inner_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        # Index 1 would be dropout in the reference layout; keeping the indices keeps the key names.
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Self-attention over image tokens, cross-attention onto the text, then a feed-forward."""

    def __init__(self, dim: int, head_dim: int, context_dim: int):
        super().__init__()
        heads = dim // head_dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Runs a transformer block over the pixels of a feature map, conditioned on the text.
    SD2 projects in and out with linear layers (SD1 used 1x1 convolutions)."""

    def __init__(self, channels: int, head_dim: int, context_dim: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, head_dim, context_dim)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        tokens = self.proj_out(tokens)
        return x + tokens.transpose(1, 2).reshape(batch, channels, height, width)


class Downsample(nn.Module):
    """Halves the resolution with a strided convolution. The VAE pads only right/bottom
    (`asymmetric_padding`), the U-Net pads all sides."""

    def __init__(self, channels: int, asymmetric_padding: bool = False):
        super().__init__()
        self.asymmetric_padding = asymmetric_padding
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric_padding else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric_padding:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Doubles the resolution: nearest-neighbour interpolation, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter: a ControlNet starts as a no-op on the frozen U-Net."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module
