"""Load any supported checkpoint into our networks, strictly; save ours in any supported layout.

Supported, detected from the keys themselves:
  ldm        the original single-file SD2(-inpainting) checkpoint (EMA weights used when present)
  cldm       lllyasviel's ControlNet (`control_model.*`, or the same keys without the prefix)
  diffusers  a diffusers folder (unet/, vae/, text_encoder/, controlnet/), one component folder,
             or one component's weight file
  open_clip  an OpenCLIP text tower's weights
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from ..modules.models import Models
from . import diffusers, ldm
from .io import CheckpointError, open_state_dict, save_state_dict
from .keymap import KeyMap, gather, prefixed, to_foreign

EMA_PREFIX = "model_ema."
SHOWN_KEYS = 5  # how many offending keys an error lists


def ldm_maps(models: Models) -> dict[str, KeyMap]:
    """Maps for a single-file checkpoint holding every component under its ldm prefix."""
    config = models.config
    maps = {"unet": prefixed(ldm.unet_map(config.unet, models.unet.state_dict()), ldm.UNET_PREFIX),
            "vae": prefixed(ldm.vae_map(config.vae, models.vae.state_dict()), ldm.VAE_PREFIX),
            "text_encoder": prefixed(ldm.text_map(config.text, models.text_encoder.state_dict()), ldm.TEXT_PREFIX)}
    if models.controlnet is not None:
        maps["controlnet"] = prefixed(cldm_map(models), ldm.CONTROL_PREFIX)
    return maps


def cldm_map(models: Models) -> KeyMap:
    return ldm.controlnet_map(models.config.unet, models.config.controlnet, models.controlnet.state_dict())


def detect(keys: set[str], models: Models) -> tuple[str, dict[str, KeyMap]]:
    """Name the layout of a single file and give a map for each component it holds."""
    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    def needs_controlnet(layout: str) -> None:
        if models.controlnet is None:
            raise CheckpointError(f"this is a {layout} ControlNet checkpoint, but no ControlNet was built to take it")

    if has(ldm.UNET_PREFIX) or has(ldm.VAE_PREFIX) or has(ldm.TEXT_PREFIX) or has(ldm.CONTROL_PREFIX):
        maps = ldm_maps(models)
        present = {name: key_map for name, key_map in maps.items()
                   if any(key in keys for key in key_map.foreign_keys())}
        return "ldm single-file checkpoint", present
    if has("input_hint_block.") or has("zero_convs."):
        needs_controlnet("cldm")
        return "cldm ControlNet", {"controlnet": cldm_map(models)}
    if has("controlnet_cond_embedding."):
        needs_controlnet("diffusers")
        return "diffusers ControlNet", {"controlnet": diffusers.identity_map(models.controlnet.state_dict())}
    if has("up_blocks.") and has("conv_in."):
        return "diffusers U-Net", {"unet": diffusers.identity_map(models.unet.state_dict())}
    if has("encoder.down_blocks.") or has("decoder.up_blocks."):
        our_keys = models.vae.state_dict()
        legacy = any(".attentions.0.query." in key for key in keys)
        return "diffusers VAE", {"vae": diffusers.legacy_vae_map(our_keys) if legacy
                                 else diffusers.identity_map(our_keys)}
    if has("encoder.down.") or has("decoder.up."):
        return "ldm VAE", {"vae": ldm.vae_map(models.config.vae, models.vae.state_dict())}
    if has("text_model.") or (has("encoder.layers.") and has("embeddings.token_embedding.")):
        prefix = "text_model." if has("text_model.") else ""
        return "Hugging Face CLIP text encoder", {"text_encoder": diffusers.hf_clip_map(
            models.text_encoder.state_dict(), prefix)}
    if has("transformer.resblocks.") and has("token_embedding."):
        return "OpenCLIP text tower", {"text_encoder": ldm.text_map(models.config.text,
                                                                    models.text_encoder.state_dict())}
    raise CheckpointError(f"cannot tell what this checkpoint holds from its keys (first: {sorted(keys)[:SHOWN_KEYS]}); "
                          "expected an SD/ControlNet checkpoint in ldm, cldm or diffusers layout")


class RenamedKeys(Mapping):
    """A state dict seen under other names, {shown key: stored key}; nothing is read or copied."""

    def __init__(self, stored: Mapping[str, torch.Tensor], names: dict[str, str]):
        self.stored, self.names = stored, names

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.stored[self.names[key]]

    def __contains__(self, key) -> bool:  # Mapping's own would read the tensor
        return key in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def use_ema_weights(state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """ldm keeps EMA copies of the U-Net as `model_ema.<key without dots>`; read those in their place
    (by key: the weights themselves are read only when loaded)."""
    if not any(key.startswith(EMA_PREFIX) for key in state_dict):
        return state_dict
    names = {}
    for key in state_dict:
        if key.startswith(EMA_PREFIX):
            continue
        ema_key = EMA_PREFIX + key[len("model."):].replace(".", "")
        names[key] = ema_key if key.startswith("model.diffusion_model.") and ema_key in state_dict else key
    return RenamedKeys(state_dict, names)


def wrong_model_hint(component: str, module: nn.Module, weights: dict[str, torch.Tensor]) -> str:
    """Name the common mix-ups: a text-to-image U-Net or an ordinary 4-channel ControlNet."""
    if component in ("unet", "controlnet") and "conv_in.weight" in weights:
        found, expected = weights["conv_in.weight"].shape[1], module.conv_in.weight.shape[1]
        if found != expected:
            kind = "text-to-image" if found == 4 else f"{found}-channel"
            return (f" This is a {kind} {component} (conv_in reads {found} channels); salient-outpaint needs the "
                    f"{expected}-channel inpainting one (stable-diffusion-2-inpainting and a ControlNet like the "
                    "authors' release, in_channels 9).")
    return ""


def load_component(module: nn.Module, component: str, layout: str, key_map: KeyMap,
                   foreign: Mapping[str, torch.Tensor], device: torch.device | str | None = None) -> None:
    """Load strictly: every missing, unexpected or mis-shaped key is reported in one error.

    Each tensor is cast to the dtype of the parameter it fills and moved to its device as it is read,
    then assigned in its place; a network built on the meta device (modules/models.py:empty_models) is
    so never initialised, and a half-precision one never exists in fp32. Meta tensors go to `device`."""
    expected = module.state_dict()
    needed = key_map.foreign_keys()
    missing = sorted(key for key in needed if key not in foreign)
    unexpected = sorted(key for key in foreign if key.startswith(key_map.namespace) and key not in needed
                        and not key_map.is_unused(key))
    weights = {}
    for key, tensor in gather(foreign, key_map):
        target = expected[key]
        if tensor.shape == target.shape:  # a mis-shaped tensor stays as read, for the error below
            tensor = tensor.to(device=torch.device(device or "cpu") if target.is_meta else target.device,
                               dtype=target.dtype)
        weights[key] = tensor
    mismatched = [f"{key} (ours {tuple(expected[key].shape)}, file {tuple(value.shape)})"
                  for key, value in weights.items() if value.shape != expected[key].shape]
    problems = [f"{len(keys)} {what} (first: {', '.join(keys[:SHOWN_KEYS])})"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("shape mismatches", mismatched)) if keys]
    if problems:
        raise CheckpointError(f"cannot load the {component} from a {layout}: {'; '.join(problems)}."
                              + wrong_model_hint(component, module, weights))
    module.load_state_dict(weights, assign=True)


def component_file(folder: Path) -> Path | None:
    return next((folder / name for name in diffusers.WEIGHT_FILES if (folder / name).is_file()), None)


def load_checkpoint(path: str | Path, models: Models, prefer_ema: bool = True,
                    device: torch.device | str | None = None) -> list[str]:
    """Load every component the checkpoint holds into `models`; returns their names.
    A diffusers folder's ControlNet is left out when `models` has none (the SI2 baseline).
    Networks on the meta device are filled in place on `device` (default: the CPU), in their dtype;
    the others keep their device and dtype."""
    path = Path(path)
    if path.is_dir():
        wanted = [name for name in diffusers.COMPONENT_FOLDERS
                  if name != "controlnet" or models.controlnet is not None]
        folders = [path / name for name in wanted if (path / name).is_dir()] or [path]
        files = [component_file(folder) for folder in folders]
        if not any(files):
            raise CheckpointError(f"{path} holds no weights: expected diffusers component folders "
                                  f"({', '.join(diffusers.COMPONENT_FOLDERS)}) with {diffusers.WEIGHT_FILES[0]}")
        return [name for file in files if file is not None for name in load_checkpoint(file, models, prefer_ema, device)]
    foreign = open_state_dict(path)
    if prefer_ema:
        foreign = use_ema_weights(foreign)
    layout, maps = detect(set(foreign), models)
    modules = models.components()
    for component, key_map in maps.items():
        load_component(modules[component], component, f"{layout} ({path.name})", key_map, foreign, device)
    return list(maps)


LAYOUTS = ("ldm", "cldm", "diffusers")


def save_checkpoint(models: Models, destination: str | Path, layout: str,
                    components: list[str] | None = None) -> Path:
    """Write in one of `LAYOUTS`: `ldm` (one file with every built component, the ControlNet under
    control_model.*), `cldm` (the ControlNet alone, lllyasviel's layout) or `diffusers` (a folder with
    one sub-folder per component, each with the config.json diffusers or transformers rebuilds it from,
    and model_index.json, scheduler/ and tokenizer/, so that the folder loads as a diffusers pipeline).
    `components` limits what is written (default: every built network)."""
    destination = Path(destination)
    modules = {name: module for name, module in models.components().items()
               if components is None or name in components}
    if layout == "ldm":
        maps = ldm_maps(models)
        foreign = {}
        for component, module in modules.items():
            foreign.update(to_foreign(module.state_dict(), maps[component]))
        save_state_dict(foreign, destination)
    elif layout == "cldm":
        if models.controlnet is None:
            raise CheckpointError("the cldm layout holds a ControlNet, and none was built")
        save_state_dict(to_foreign(models.controlnet.state_dict(), ldm_maps(models)["controlnet"]), destination)
    elif layout == "diffusers":
        for component, module in modules.items():
            if component == "controlnet":
                diffusers.save_controlnet_folder(module, models.config, destination / component)
                continue
            our_keys = module.state_dict()
            key_map = (diffusers.hf_clip_map(our_keys) if component == "text_encoder"
                       else diffusers.identity_map(our_keys))
            # transformers names its weight file differently from diffusers
            name = "model.safetensors" if component == "text_encoder" else diffusers.WEIGHT_FILES[0]
            save_state_dict(to_foreign(our_keys, key_map), destination / component / name)
            # what diffusers and transformers rebuild each network from (and, for the U-Net, its input
            # channels tell an inpainting U-Net from a text-to-image one)
            diffusers.write_json(destination / component / "config.json",
                                 diffusers.COMPONENT_CONFIGS[component](models.config))
        diffusers.write_pipeline_files(models.config, destination, modules)
    else:
        raise CheckpointError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    return destination
