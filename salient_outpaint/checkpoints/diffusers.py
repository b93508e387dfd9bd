"""Rule tables for the diffusers folder layout, plus writing our ControlNet as a diffusers folder.

Our U-Net, ControlNet and VAE already use diffusers' parameter names, so their maps are the
identity, except the VAE attention names of diffusers before 0.14 (`query`, `key`, `value`,
`proj_attn`). The text encoder of a diffusers SD2 folder is a Hugging Face `CLIPTextModel`
with the 23 blocks SD2 uses; its attention keeps q, k and v apart, as ours does.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ModelConfig, variant
from ..files import atomic_write
from ..modules.controlnet import ControlNet
from .io import save_state_dict
from .keymap import KeyMap, Source, map_by_prefix

# File names diffusers uses inside a component's sub-folder, most preferred first.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors")
COMPONENT_FOLDERS = ("unet", "vae", "text_encoder", "controlnet")

LEGACY_VAE_ATTENTION = [("to_q.", "query."), ("to_k.", "key."), ("to_v.", "value."), ("to_out.0.", "proj_attn.")]

HF_CLIP_RULES = [("token_embedding.", "embeddings.token_embedding."),
                 ("positional_embedding", "embeddings.position_embedding.weight"),
                 ("transformer.resblocks.", "encoder.layers."),
                 ("ln_final.", "final_layer_norm.")]
HF_CLIP_LEAVES = [("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("mlp.c_fc.", "mlp.fc1."),
                  ("mlp.c_proj.", "mlp.fc2."), ("attn.to_q.", "self_attn.q_proj."),
                  ("attn.to_k.", "self_attn.k_proj."), ("attn.to_v.", "self_attn.v_proj."),
                  ("attn.to_out.0.", "self_attn.out_proj.")]


def identity_map(our_keys) -> KeyMap:
    return map_by_prefix("diffusers", our_keys, [])


def legacy_vae_map(our_keys) -> KeyMap:
    rules = [(f"{part}.mid_block.attentions.0.{ours}", f"{part}.mid_block.attentions.0.{theirs}")
             for part in ("encoder", "decoder") for ours, theirs in LEGACY_VAE_ATTENTION]
    return map_by_prefix("diffusers (legacy attention names)", our_keys, rules)


def hf_clip_map(our_keys, prefix: str = "text_model.") -> KeyMap:
    """transformers before v5 nests CLIPTextModel's weights under `text_model.` (as the SD2 release
    does); v5 writes them without it."""
    sources = {}
    for key in our_keys:
        name = key
        for ours, theirs in HF_CLIP_RULES:
            if name.startswith(ours):
                name = prefix + theirs + name[len(ours):]
        for ours, theirs in HF_CLIP_LEAVES:
            name = name.replace("." + ours, "." + theirs)
        sources[key] = Source(name)
    return KeyMap("diffusers (Hugging Face CLIP)", sources, unused=(prefix + "embeddings.position_ids",))


def encoder_config_json(config: ModelConfig) -> dict:
    """The config.json entries diffusers' UNet2DConditionModel and ControlNetModel share."""
    unet = config.unet
    return {
        "block_out_channels": list(unet.block_out_channels),
        "down_block_types": ["CrossAttnDownBlock2D" if attention else "DownBlock2D"
                             for attention in unet.cross_attention_levels],
        "layers_per_block": unet.layers_per_block,
        "attention_head_dim": [channels // unet.attention_head_dim for channels in unet.block_out_channels],
        "cross_attention_dim": unet.cross_attention_dim,
        "norm_num_groups": unet.norm_groups,
        "use_linear_projection": True,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "only_cross_attention": False,
        "upcast_attention": False,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "num_attention_heads": None,
        "transformer_layers_per_block": [1] * len(unet.block_out_channels),
    }


def unet_config_json(config: ModelConfig) -> dict:
    """The config.json diffusers' UNet2DConditionModel needs to rebuild our U-Net."""
    return {"_class_name": "UNet2DConditionModel", "in_channels": config.unet.in_channels,
            "out_channels": config.unet.out_channels, "sample_size": config.image_size // config.vae.downsample_factor,
            **encoder_config_json(config),
            "up_block_types": ["CrossAttnUpBlock2D" if attention else "UpBlock2D"
                               for attention in reversed(config.unet.cross_attention_levels)]}


def controlnet_config_json(config: ModelConfig) -> dict:
    """The config.json diffusers' ControlNetModel needs to rebuild our ControlNet, plus `control_image`
    (what its control image shows; diffusers ignores the entry)."""
    return {
        "_class_name": "ControlNetModel",
        "in_channels": config.controlnet.in_channels,
        "conditioning_channels": config.controlnet.conditioning_channels,
        "conditioning_embedding_out_channels": list(config.controlnet.conditioning_embedding_channels),
        **encoder_config_json(config),
        "controlnet_conditioning_channel_order": "rgb",
        "global_pool_conditions": False,
        "control_image": config.controlnet.control_image,
    }


def component_config(path: Path, component: str) -> dict:
    """The config.json of a component given as a diffusers folder, a component folder or its weight
    file ({} when there is none)."""
    class_name = {"unet": "UNet2DConditionModel", "controlnet": "ControlNetModel"}[component]
    folder = path.parent if path.is_file() else path
    for candidate in (folder / component / "config.json", folder / "config.json"):
        if candidate.is_file():
            entries = json.loads(candidate.read_text())
            if entries.get("_class_name") == class_name:
                return entries
    return {}


def configured_variant(config: ModelConfig, paths) -> ModelConfig:
    """`config` with the U-Net input, ControlNet input and control image that the config.json files of
    the checkpoints at `paths` record (later paths win); folders without them keep the config's. This
    is how a variant trained with train.py's --unet-in-channels, --controlnet-in-channels or
    --control-image loads without flags."""
    unet_in_channels = controlnet_in_channels = control_image = None
    for path in map(Path, paths):
        unet, controlnet = component_config(path, "unet"), component_config(path, "controlnet")
        unet_in_channels = unet.get("in_channels", unet_in_channels)
        controlnet_in_channels = controlnet.get("in_channels", controlnet_in_channels)
        control_image = controlnet.get("control_image", control_image)
    return variant(config, unet_in_channels, controlnet_in_channels, control_image)


def save_controlnet_folder(controlnet: ControlNet, config: ModelConfig, folder: str | Path) -> Path:
    """Write `folder/config.json` and `folder/diffusion_pytorch_model.safetensors` so that
    `diffusers.ControlNetModel.from_pretrained(folder)` loads what we trained."""
    folder = Path(folder)
    text = json.dumps(controlnet_config_json(config), indent=2)
    atomic_write(folder / "config.json", lambda temporary: Path(temporary).write_text(text))
    weights = {key: value.detach().to(torch.float32) for key, value in controlnet.state_dict().items()}
    save_state_dict(weights, folder / "diffusion_pytorch_model.safetensors")
    return folder
