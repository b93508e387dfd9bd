"""Rule tables for the diffusers folder layout, plus writing our ControlNet as a diffusers folder.

Our U-Net, ControlNet and VAE already use diffusers' parameter names, so their maps are the
identity, except the VAE attention names of diffusers before 0.14 (`query`, `key`, `value`,
`proj_attn`). The text encoder of a diffusers SD2 folder is a Hugging Face `CLIPTextModel`
with the 23 blocks SD2 uses; its attention keeps q, k and v apart, as ours does.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from ..config import ModelConfig, variant
from ..files import atomic_write
from ..modules.controlnet import ControlNet
from ..modules.text import open_clip_tokenizer
from .io import save_state_dict
from .keymap import KeyMap, Source, map_by_prefix

# File names diffusers uses inside a component's sub-folder, most preferred first.
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin",
                "pytorch_model.bin", "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors")
COMPONENT_FOLDERS = ("unet", "vae", "text_encoder", "controlnet")

# Our own settings in a ControlNet's config.json; the underscore keeps diffusers from warning about it.
# Folders exported before it was introduced say "control_image", still read.
OUR_CONTROL_IMAGE_KEY = "_control_image"
START_TOKEN, END_TOKEN = 49406, 49407  # open_clip's <|startoftext|> and <|endoftext|>

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
    """The config.json diffusers' ControlNetModel needs to rebuild our ControlNet, plus `_control_image`
    (what its control image shows): diffusers passes over keys starting with an underscore silently."""
    return {
        "_class_name": "ControlNetModel",
        "in_channels": config.controlnet.in_channels,
        "conditioning_channels": config.controlnet.conditioning_channels,
        "conditioning_embedding_out_channels": list(config.controlnet.conditioning_embedding_channels),
        **encoder_config_json(config),
        "controlnet_conditioning_channel_order": "rgb",
        "global_pool_conditions": False,
        OUR_CONTROL_IMAGE_KEY: config.controlnet.control_image,
    }


def vae_config_json(config: ModelConfig) -> dict:
    """The config.json diffusers' AutoencoderKL needs to rebuild our VAE."""
    vae = config.vae
    levels = len(vae.block_out_channels)
    return {"_class_name": "AutoencoderKL", "in_channels": vae.image_channels, "out_channels": vae.image_channels,
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "block_out_channels": list(vae.block_out_channels), "layers_per_block": vae.layers_per_block,
            "act_fn": "silu", "latent_channels": vae.latent_channels, "norm_num_groups": vae.norm_groups,
            "sample_size": config.image_size, "scaling_factor": vae.scaling_factor}


def text_encoder_config_json(config: ModelConfig) -> dict:
    """The config.json transformers' CLIPTextModel needs to rebuild our text encoder (causal attention,
    GELU, LayerNorm eps 1e-5, as open_clip's)."""
    text = config.text
    return {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": text.vocab_size,
            "hidden_size": text.width, "intermediate_size": 4 * text.width, "num_attention_heads": text.heads,
            "num_hidden_layers": text.layers, "max_position_embeddings": text.context_length, "hidden_act": "gelu",
            "layer_norm_eps": 1e-5, "bos_token_id": START_TOKEN, "eos_token_id": END_TOKEN, "pad_token_id": 0,
            "projection_dim": text.width, "torch_dtype": "float32"}


def scheduler_config_json(config: ModelConfig) -> dict:
    """scheduler/scheduler_config.json: the training noise schedule, as DDIM (the pipeline's sampler is
    chosen per call; this records the betas and what the U-Net predicts)."""
    schedule = config.schedule
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": schedule.num_train_timesteps,
            "beta_start": schedule.beta_start, "beta_end": schedule.beta_end,
            "beta_schedule": schedule.beta_schedule, "prediction_type": schedule.prediction_type,
            "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}


def model_index_json(components) -> dict:
    """model_index.json: which class loads each sub-folder, so that the folder loads as one pipeline."""
    classes = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
               "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
               "scheduler": ["diffusers", "DDIMScheduler"], "controlnet": ["diffusers", "ControlNetModel"]}
    pipeline = ("StableDiffusionControlNetInpaintPipeline" if "controlnet" in components
                else "StableDiffusionInpaintPipeline")
    return {"_class_name": pipeline, **{name: classes[name] for name in classes if name in components},
            "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}


COMPONENT_CONFIGS = {"unet": unet_config_json, "vae": vae_config_json, "text_encoder": text_encoder_config_json,
                     "controlnet": controlnet_config_json}


def write_json(path: Path, entries: dict) -> None:
    text = json.dumps(entries, indent=2)
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def write_tokenizer(folder: Path, context_length: int) -> None:
    """tokenizer/: vocab.json and merges.txt for transformers' CLIPTokenizer, built from the BPE file that
    open_clip ships (the same vocabulary, in the same order: bytes, bytes + </w>, the merges, the two
    special tokens), and SD2's settings: "!" (id 0) pads, as open_clip's zeros do."""
    bpe = open_clip_tokenizer()
    with gzip.open(bpe.default_bpe(), "rt", encoding="utf-8") as file:
        merges = file.read().split("\n")[1:49152 - 256 - 2 + 1]  # open_clip's slice of the file
    byte_symbols = list(bpe.bytes_to_unicode().values())
    vocabulary = byte_symbols + [symbol + "</w>" for symbol in byte_symbols] + ["".join(merge.split())
                                                                                for merge in merges]
    vocabulary += ["<|startoftext|>", "<|endoftext|>"]
    write_json(folder / "vocab.json", {token: index for index, token in enumerate(vocabulary)})
    text = "#version: 0.2\n" + "\n".join(merges) + "\n"
    atomic_write(folder / "merges.txt", lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "!"}
    write_json(folder / "special_tokens_map.json", special)
    write_json(folder / "tokenizer_config.json", {"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length,
                                                  "do_lower_case": True, **special})


def write_pipeline_files(config: ModelConfig, folder: Path, components) -> None:
    """Beside the components' folders: model_index.json, scheduler/ and, with a text encoder, tokenizer/."""
    components = list(components)
    if "text_encoder" in components:
        write_tokenizer(folder / "tokenizer", config.text.context_length)
        components.append("tokenizer")
    write_json(folder / "scheduler" / "scheduler_config.json", scheduler_config_json(config))
    write_json(folder / "model_index.json", model_index_json([*components, "scheduler"]))


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
        control_image = controlnet.get(OUR_CONTROL_IMAGE_KEY, controlnet.get("control_image", control_image))
    return variant(config, unet_in_channels, controlnet_in_channels, control_image)


def save_controlnet_folder(controlnet: ControlNet, config: ModelConfig, folder: str | Path) -> Path:
    """Write `folder/config.json` and `folder/diffusion_pytorch_model.safetensors` so that
    `diffusers.ControlNetModel.from_pretrained(folder)` loads what we trained."""
    folder = Path(folder)
    write_json(folder / "config.json", controlnet_config_json(config))
    weights = {key: value.detach().to(torch.float32) for key, value in controlnet.state_dict().items()}
    save_state_dict(weights, folder / "diffusion_pytorch_model.safetensors")
    return folder
