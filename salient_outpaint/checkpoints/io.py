"""Reading and writing state dicts. Pickled files are opened only with `weights_only=True`,
so a checkpoint cannot run code on load."""
from __future__ import annotations

import os
import pickle
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
    if path.suffix == ".safetensors" or is_safetensors(path):
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types for damaged headers
            raise CheckpointError(f"{path} is not a readable .safetensors file ({error})") from None
    if path.suffix in PICKLE_SUFFIXES:
        loaded = load_pickled_tensors(path)
        # Lightning checkpoints (the original SD release) keep the weights under "state_dict".
        state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"{path} holds no state dict")
        return {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors, "
                          f"{', '.join(PICKLE_SUFFIXES)} or a diffusers folder")


def is_safetensors(path: Path) -> bool:
    """Sniff the format: a safetensors file starts with its JSON header's length (8 bytes) and then '{'."""
    with open(path, "rb") as file:
        start = file.read(9)
    return len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") < path.stat().st_size


def load_pickled_tensors(path: str | Path):
    """torch.load with weights_only=True: tensors and plain containers, never code. Every failure is one
    line that says what the file is; a file that needs code to unpickle is refused without the advice,
    in torch's own message, to load it unsafely."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if str(error).startswith("Weights only load failed"):
            raise CheckpointError(
                f"{path} holds Python code or objects besides tensors, so it cannot be loaded safely; if you "
                "trust its source, convert it to .safetensors (its tensors only) in an environment you trust "
                "and pass that file") from None
        reason = error
    except Exception as error:  # a damaged zip, random bytes, a text file: each fails its own way
        reason = error
    first_line = str(reason).strip().splitlines()[0][:160] if str(reason).strip() else ""
    raise CheckpointError(f"{path} is not a PyTorch weights file, or a damaged one "
                          f"({type(reason).__name__}{': ' + first_line if first_line else ''})") from None


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
