"""Reading and writing state dicts. Pickled files are opened only with `weights_only=True`,
so a checkpoint cannot run code on load. Reading is lazy (`open_state_dict`): the loader takes
one tensor at a time, so a checkpoint is never held whole next to the networks it fills."""
from __future__ import annotations

import json
import mmap
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..files import atomic_write

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says what was found and what to do."""


class SafetensorsFile(Mapping):
    """A .safetensors file's tensors, each mapped from the file only when asked for. The format is an
    8-byte little-endian header length, a JSON header naming each tensor's dtype, shape and byte range,
    then the bytes.

    Each tensor gets a memory map of its own bytes (copy-on-write, so writing to it never touches the
    file): a tensor used as it is stored costs no copy and no time until it is first read, and one
    cast to another dtype lets its file pages go with the mapping as soon as the cast is made, so
    loading a network in bf16 never holds its fp32 bytes at once."""

    def __init__(self, path: Path):
        self.path = path
        size = path.stat().st_size
        try:
            with open(path, "rb") as file:
                header_size = int.from_bytes(file.read(8), "little")
                if header_size > size - 8:
                    raise ValueError(f"its header claims {header_size} bytes of a {size}-byte file")
                header = json.loads(file.read(header_size))
            header.pop("__metadata__", None)
            # key -> (dtype, shape, first byte, end byte), the bytes counted from the end of the header
            self.entries = {key: (SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]),
                                  *entry["data_offsets"]) for key, entry in header.items()}
        except Exception as error:  # a damaged file fails in many ways: bad length, JSON, dtype, fields
            raise CheckpointError(f"{path} is not a readable .safetensors file ({error!r})") from None
        self.data_start = 8 + header_size

    def __getitem__(self, key: str) -> torch.Tensor:
        dtype, shape, start, end = self.entries[key]
        if end == start:
            return torch.empty(shape, dtype=dtype)
        offset = self.data_start + start
        page_start = offset - offset % mmap.ALLOCATIONGRANULARITY  # maps begin on a page boundary
        try:
            with open(self.path, "rb") as file:
                mapped = mmap.mmap(file.fileno(), offset + (end - start) - page_start, offset=page_start,
                                   access=mmap.ACCESS_COPY)
        except ValueError:  # the range runs past the end of the file
            raise CheckpointError(f"{self.path} is truncated: {key} lies past its end") from None
        data = torch.frombuffer(mapped, dtype=torch.uint8, count=end - start, offset=offset - page_start)
        return data.view(dtype).reshape(shape)

    def __contains__(self, key) -> bool:  # Mapping's own would read the tensor
        return key in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


def open_state_dict(path: str | Path) -> Mapping[str, torch.Tensor]:
    """A checkpoint's tensors by key, without reading the file whole: each tensor is memory-mapped
    (a pickle with torch.load(mmap=True)), so only the tensors asked for are ever read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors" or is_safetensors(path):
        return SafetensorsFile(path)
    if path.suffix in PICKLE_SUFFIXES:
        loaded = load_pickled_tensors(path)
        # Lightning checkpoints (the original SD release) keep the weights under "state_dict".
        state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"{path} holds no state dict")
        return {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r}; expected .safetensors, "
                          f"{', '.join(PICKLE_SUFFIXES)} or a diffusers folder")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, in memory."""
    tensors = open_state_dict(path)
    return {key: tensors[key] for key in tensors}


def is_safetensors(path: Path) -> bool:
    """Sniff the format: a safetensors file starts with its JSON header's length (8 bytes) and then '{'."""
    with open(path, "rb") as file:
        start = file.read(9)
    return len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") < path.stat().st_size


def load_mapped(path: str | Path):
    """torch.load, weights only and memory-mapped (only the tensors used are ever read); files written
    before PyTorch 1.6's zip format cannot be mapped and are read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "zipfile" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def load_pickled_tensors(path: str | Path):
    """torch.load with weights_only=True: tensors and plain containers, never code. Every failure is one
    line that says what the file is; a file that needs code to unpickle is refused without the advice,
    in torch's own message, to load it unsafely."""
    try:
        return load_mapped(path)
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


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write atomically, as safetensors or (other suffixes) a pickled dict of tensors."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    if Path(path).suffix == ".safetensors":
        atomic_write(path, lambda temporary: save_file(tensors, temporary))
    else:
        atomic_write(path, lambda temporary: torch.save(tensors, temporary))
