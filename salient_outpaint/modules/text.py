"""The OpenCLIP text transformer that turns a prompt into the (B, 77, D) context SD2 attends to.

SD2 takes the hidden states after the *penultimate* block of OpenCLIP ViT-H/14's text tower
and passes them through the final LayerNorm; the last block and the projection to the joint
image-text space are never used. Parameter names follow open_clip, except in the attention, which
is the U-Net's (layers.Attention: q, k and v apart where open_clip fuses them into one `in_proj`,
so that neither layout needs a copy to load; checkpoints/ldm.py:text_map). The tokenizer is open_clip's (its BPE
vocabulary ships inside the package, so nothing is downloaded).
"""
from __future__ import annotations

import functools
import importlib.util
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..config import TextEncoderConfig
from .layers import Attention


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        # Each token sees only itself and the tokens before it, as CLIP was trained.
        self.attn = Attention(width, heads, width // heads, qkv_bias=True, causal=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(config.width, config.heads)
                                        for _ in range(config.layers)])


class TextEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width,
                                            _weight=torch.empty(config.vocab_size, config.width))
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        # Built on the meta device to be loaded in place, there is nothing to draw (and normal_ there
        # takes a reference path that imports torch._dynamo: seconds of loading for nothing).
        if not self.positional_embedding.is_meta:
            nn.init.normal_(self.token_embedding.weight, std=0.02)
            nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer = Transformer(config)
        self.ln_final = nn.LayerNorm(config.width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 77) int64 -> context (B, 77, width)."""
        x = self.token_embedding(tokens) + self.positional_embedding
        for block in self.transformer.resblocks:
            x = block(x)
        return self.ln_final(x)


@functools.cache
def open_clip_tokenizer():
    """open_clip's tokenizer module, loaded once from its file alone. `import open_clip.tokenizer` would first
    run the package's __init__, which imports its model zoo (torchvision's models: about 150 MiB and 1.5 s
    of every run) that the tokenizer never uses; the file imports nothing of its own package."""
    package = importlib.util.find_spec("open_clip")
    if package is None or package.origin is None:
        raise ImportError("open_clip is not installed: pip install open-clip-torch")
    spec = importlib.util.spec_from_file_location("_open_clip_tokenizer", Path(package.origin).parent / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Tokenizer:
    """open_clip's BPE tokenizer; warns when a prompt is cut to fit the context."""

    def __init__(self, context_length: int = 77):
        self.bpe = open_clip_tokenizer().SimpleTokenizer(context_length=context_length)
        self.context_length = context_length

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        for prompt in prompts:
            length = len(self.bpe.encode(prompt)) + 2  # + start and end tokens
            if length > self.context_length:
                warnings.warn(f"prompt has {length} tokens and was truncated to {self.context_length}: "
                              f"{prompt[:60]!r}...", stacklevel=2)
        return self.bpe(prompts, context_length=self.context_length)  # (B, 77), zero-padded


def encode_prompts(text_encoder: TextEncoder, tokenizer: Tokenizer, prompts: list[str]) -> torch.Tensor:
    tokens = tokenizer(prompts).to(text_encoder.token_embedding.weight.device)
    return text_encoder(tokens)
