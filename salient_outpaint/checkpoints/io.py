"""Reading and writing state dicts. Pickled files are opened only with `weights_only=True`,
so a checkpoint cannot run code on load."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
TEMPORARY_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says what was found and what to do."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise CheckpointError(f"{path} is not a readable .safetensors file ({error})") from None
    if path.suffix in PICKLE_SUFFIXES:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(f"{path} could not be read as a weights-only PyTorch checkpoint ({error})") from None
        # Lightning checkpoints (the original SD release) keep the weights under "state_dict".
        state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"{path} holds no state dict")
        return {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors, "
                          f"{', '.join(PICKLE_SUFFIXES)} or a diffusers folder")


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(temporary_path)`, flush it to the disk, then rename it onto `path` and flush the
    folder: a crash, or a power cut, leaves either the old file or the new one, never half of one.
    A process killed mid-write leaves its `<name>*.tmp` behind (no `finally` runs on SIGKILL);
    `remove_temporary_files` clears those."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=TEMPORARY_SUFFIX)
    os.close(handle)
    try:
        write(temporary)
        fsync(temporary)
        os.replace(temporary, path)
        fsync(path.parent)  # the rename itself is an entry of the folder
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def fsync(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data from the page cache to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the leftovers of atomic writes killed midway anywhere under `folder` (only safe while
    no other process writes there); returns what was deleted."""
    leftovers = sorted(Path(folder).rglob(f"*{TEMPORARY_SUFFIX}")) if Path(folder).is_dir() else []
    for leftover in leftovers:
        leftover.unlink()
    return leftovers


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write atomically, as safetensors or (other suffixes) a pickled dict of tensors."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    if Path(path).suffix == ".safetensors":
        atomic_write(path, lambda temporary: save_file(tensors, temporary))
    else:
        atomic_write(path, lambda temporary: torch.save(tensors, temporary))
