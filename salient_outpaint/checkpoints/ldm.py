"""Rule tables for the original Stability `ldm` layout and lllyasviel's `cldm` ControlNet layout.

The single-file SD2-inpainting checkpoint nests its parts as
  model.diffusion_model.*     the U-Net  (input_blocks / middle_block / output_blocks)
  first_stage_model.*         the VAE    (encoder.down.N.block.M / decoder.up.N ...)
  cond_stage_model.model.*    the OpenCLIP model (names as in open_clip, q|k|v fused as `in_proj`)
and lllyasviel's ControlNet nests its copy of the encoder under `control_model.*`.
In ldm, the U-Net's blocks are numbered flat: input block k holds [resnet, attention] or
[downsampler]; output block k holds [resnet, attention, upsampler] in that order.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ..config import ControlNetConfig, TextEncoderConfig, UNetConfig, VAEConfig
from .keymap import KeyMap, Source, map_by_prefix

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
CONTROL_PREFIX = "control_model."

RESNET_LEAVES = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
                 ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection.")]
VAE_RESNET_LEAVES = [("conv_shortcut.", "nin_shortcut.")]
VAE_ATTENTION_LEAVES = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                        ("to_out.0.", "proj_out.")]


def expand(ours: str, theirs: str, leaves: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """A module-level rule plus its leaf renames (an unrenamed leaf keeps its name)."""
    return [(ours, theirs)] + [(ours + our_leaf, theirs + their_leaf) for our_leaf, their_leaf in leaves or []]


def encoder_rules(config: UNetConfig) -> list[tuple[str, str]]:
    """The part shared by the U-Net and the ControlNet: timestep MLP, conv_in, down levels, middle."""
    rules = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("conv_in.", "input_blocks.0.0.")]
    block = 1
    levels = len(config.block_out_channels)
    for level in range(levels):
        for layer in range(config.layers_per_block):
            rules += expand(f"down_blocks.{level}.resnets.{layer}.", f"input_blocks.{block}.0.", RESNET_LEAVES)
            rules.append((f"down_blocks.{level}.attentions.{layer}.", f"input_blocks.{block}.1."))
            block += 1
        if level < levels - 1:
            rules.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{block}.0.op."))
            block += 1
    rules += expand("mid_block.resnets.0.", "middle_block.0.", RESNET_LEAVES)
    rules.append(("mid_block.attentions.0.", "middle_block.1."))
    rules += expand("mid_block.resnets.1.", "middle_block.2.", RESNET_LEAVES)
    return rules


def unet_rules(config: UNetConfig) -> list[tuple[str, str]]:
    rules = encoder_rules(config)
    levels = len(config.block_out_channels)
    for up_index in range(levels):
        level = levels - 1 - up_index
        has_attention = config.cross_attention_levels[level]
        for layer in range(config.layers_per_block + 1):
            block = up_index * (config.layers_per_block + 1) + layer
            rules += expand(f"up_blocks.{up_index}.resnets.{layer}.", f"output_blocks.{block}.0.", RESNET_LEAVES)
            rules.append((f"up_blocks.{up_index}.attentions.{layer}.", f"output_blocks.{block}.1."))
        if level > 0:
            rules.append((f"up_blocks.{up_index}.upsamplers.0.conv.",
                          f"output_blocks.{block}.{2 if has_attention else 1}.conv."))
    return rules + [("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]


def controlnet_rules(unet_config: UNetConfig, config: ControlNetConfig, our_keys) -> list[tuple[str, str]]:
    rules = encoder_rules(unet_config)
    # input_hint_block is a Sequential of convs with SiLU between them, so the convs sit at even indices.
    hint_convs = ["controlnet_cond_embedding.conv_in."]
    hint_convs += [f"controlnet_cond_embedding.blocks.{i}."
                   for i in range(2 * (len(config.conditioning_embedding_channels) - 1))]
    hint_convs.append("controlnet_cond_embedding.conv_out.")
    rules += [(ours, f"input_hint_block.{2 * i}.") for i, ours in enumerate(hint_convs)]
    zero_convs = sorted({key.split(".")[1] for key in our_keys if key.startswith("controlnet_down_blocks.")}, key=int)
    rules += [(f"controlnet_down_blocks.{i}.", f"zero_convs.{i}.0.") for i in zero_convs]
    return rules + [("controlnet_mid_block.", "middle_block_out.0.")]


def vae_rules(config: VAEConfig) -> list[tuple[str, str]]:
    levels = len(config.block_out_channels)
    rules = []
    for level in range(levels):
        for layer in range(config.layers_per_block):
            rules += expand(f"encoder.down_blocks.{level}.resnets.{layer}.", f"encoder.down.{level}.block.{layer}.",
                            VAE_RESNET_LEAVES)
        rules.append((f"encoder.down_blocks.{level}.downsamplers.0.", f"encoder.down.{level}.downsample."))
        # ldm numbers the decoder's levels from the lowest resolution up, so index them backwards.
        ldm_level = levels - 1 - level
        for layer in range(config.layers_per_block + 1):
            rules += expand(f"decoder.up_blocks.{level}.resnets.{layer}.", f"decoder.up.{ldm_level}.block.{layer}.",
                            VAE_RESNET_LEAVES)
        rules.append((f"decoder.up_blocks.{level}.upsamplers.0.", f"decoder.up.{ldm_level}.upsample."))
    for part in ("encoder", "decoder"):
        rules += expand(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
        rules += expand(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
        rules += expand(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", VAE_ATTENTION_LEAVES)
        rules.append((f"{part}.conv_norm_out.", f"{part}.norm_out."))
    return rules


def text_unused(config: TextEncoderConfig) -> tuple[str, ...]:
    """OpenCLIP keys SD2 never reads: blocks past the penultimate, the projection, and the image tower."""
    skipped_blocks = tuple(f"transformer.resblocks.{i}." for i in range(config.layers, config.checkpoint_layers))
    return skipped_blocks + ("text_projection", "logit_scale", "visual.", "attn_mask")


def unet_map(config: UNetConfig, our_keys) -> KeyMap:
    return map_by_prefix("ldm", our_keys, unet_rules(config))


def controlnet_map(unet_config: UNetConfig, config: ControlNetConfig, our_keys) -> KeyMap:
    return map_by_prefix("cldm", our_keys, controlnet_rules(unet_config, config, our_keys))


def vae_map(config: VAEConfig, our_keys) -> KeyMap:
    attention_prefixes = tuple(f"{part}.mid_block.attentions.0.to_" for part in ("encoder", "decoder"))
    return map_by_prefix("ldm", our_keys, vae_rules(config), conv1x1_prefixes=attention_prefixes)


def text_map(config: TextEncoderConfig, our_keys) -> KeyMap:
    """Our text encoder uses open_clip's names except in the attention, which keeps q, k and v apart
    (`to_q`, ...) where open_clip fuses them into one `in_proj`: ours are slices of it."""
    key_map = map_by_prefix("open_clip", our_keys, [], unused=text_unused(config))
    sources = dict(key_map.sources)
    for key in our_keys:
        fused = re.fullmatch(r"(.*\.attn\.)to_([qkv])\.(weight|bias)", key)
        if fused:
            stem, projection, kind = fused.groups()
            sources[key] = Source(f"{stem}in_proj_{kind}", part="qkv".index(projection), parts=3)
        elif ".attn.to_out.0." in key:
            sources[key] = Source(key.replace(".attn.to_out.0.", ".attn.out_proj."))
    return replace(key_map, sources=sources)
