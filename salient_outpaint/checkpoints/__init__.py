"""Checkpoint formats: detection from keys, key maps as data, strict loading, export."""
from .diffusers import save_controlnet_folder
from .io import CheckpointError, read_state_dict, save_state_dict
from .loader import load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "load_checkpoint", "read_state_dict", "save_checkpoint", "save_controlnet_folder",
           "save_state_dict"]
