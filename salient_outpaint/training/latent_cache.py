"""Precomputed latents: the frozen VAE and text encoder run once per item, not once per step.

In the ControlNet stage everything the frozen encoders see is fixed by the dataset item: the image,
the masked image (its paint mask is the background of the object mask) and the caption. So their
outputs can be computed ahead, for a chosen number of epochs of augmentation:

    LATENTS/manifest.json                          what the cache was made for (compared on use)
    LATENTS/epoch_0000/shard_000000.safetensors    per item: VAE posterior mean and std of the image
                                                   and of the masked image (4, H/8, W/8) each, the
                                                   object mask (1, H, W) as uint8; captions in the
                                                   file's metadata
    LATENTS/text.safetensors                       one embedding per distinct caption, and ""

The posterior noise, timestep and diffusion noise are still drawn at each step from the sample's
generator, so a run reading the cache gives the same loss as one encoding live (to float rounding
of batched convolutions). Epoch e of a run reads cached epoch e mod EPOCHS.

Each file is written atomically and skipped when present, so an interrupted precomputation resumes
where it stopped (removing the temporary file it was killed writing); under torchrun the shards are
shared out between the processes.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from .. import conditioning, distributed
from ..files import atomic_write, remove_temporary_files
from .config import TrainConfig
from .objective import TrainingObjective

POSTERIOR_KEYS = ("image_mean", "image_std", "masked_mean", "masked_std")
MANIFEST_NAME = "manifest.json"
TEXT_NAME = "text.safetensors"
RERUN_HINT = "run train.py with the same flags and --precompute-latents EPOCHS"


def encoders_fingerprint(modules) -> str:
    """SHA-256 of the frozen encoders' weights as they are used (after casting to --frozen-dtype)."""
    digest = hashlib.sha256()
    for module in modules:
        for key, tensor in module.state_dict().items():
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(config: TrainConfig, num_items: int, encoders: list[nn.Module]) -> dict:
    """Everything that decides the cache's contents; a cache is used only where all of it matches."""
    return {"preset": config.preset, "resolution": config.resolution, "data": list(config.data),
            "data_weights": list(config.data_weights), "seed": config.seed, "frozen_dtype": config.frozen_dtype,
            "num_items": num_items, "encoders": encoders_fingerprint(encoders)}


def shard_path(directory: Path, epoch: int, shard: int) -> Path:
    return directory / f"epoch_{epoch:04d}" / f"shard_{shard:06d}.safetensors"


def all_shard_paths(directory: Path, manifest: dict) -> list[Path]:
    shards = math.ceil(manifest["key"]["num_items"] / manifest["shard_size"])
    return [shard_path(directory, epoch, shard) for epoch in range(manifest["epochs"]) for shard in range(shards)]


class LatentDataset(Dataset):
    """Items of a cache, in the dataset's own indexing: {"mask", "caption", *POSTERIOR_KEYS}."""

    def __init__(self, directory: Path, manifest: dict):
        self.directory, self.epochs, self.shard_size = directory, manifest["epochs"], manifest["shard_size"]
        self.num_items = manifest["key"]["num_items"]
        self.cached_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.cached_epoch = epoch % self.epochs

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> dict:
        shard, row = divmod(index, self.shard_size)
        with safe_open(str(shard_path(self.directory, self.cached_epoch, shard)), framework="pt") as file:
            item = {key: file.get_slice(key)[row:row + 1][0] for key in (*POSTERIOR_KEYS, "mask")}
            caption = json.loads(file.metadata()["captions"])[row]
        return {**item, "mask": item["mask"].float(), "caption": caption}


def read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def differences(cached: dict, current: dict) -> list[str]:
    return [f"{name}: cached {cached.get(name)!r}, now {value!r}" for name, value in current.items()
            if cached.get(name) != value]


def open_latent_cache(directory: str | Path, key: dict, samples_read: int, device: torch.device,
                      note: Callable[[str], None]) -> tuple[LatentDataset, dict[str, torch.Tensor]]:
    """Check the cache against the run's `cache_key`; its items, and its text embeddings by caption
    (on `device`), which spare the text encoder. `samples_read`: how many items the run reads in all."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"no precomputed latents in {directory} (no {MANIFEST_NAME}); to make them, "
                                f"{RERUN_HINT}")
    mismatched = differences(manifest["key"], key)
    if mismatched:
        raise ValueError(f"the latents in {directory} were made for another setup ({'; '.join(mismatched)}); "
                         "precompute them again for this one, into another folder")
    missing = [path for path in [*all_shard_paths(directory, manifest), directory / TEXT_NAME]
               if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"the latents in {directory} are incomplete: {len(missing)} file(s) missing, "
                                f"e.g. {missing[0]}; to finish them, {RERUN_HINT}")
    with safe_open(str(directory / TEXT_NAME), framework="pt") as file:
        text = file.get_tensor("embeddings")  # (captions, context length, width)
        captions = json.loads(file.metadata()["captions"])
    run_epochs = math.ceil(samples_read / manifest["key"]["num_items"])
    if run_epochs > manifest["epochs"]:
        note(f"note: this run reads {run_epochs} epochs of data and {directory} holds {manifest['epochs']}; "
             f"epoch e reuses the augmentations of cached epoch e mod {manifest['epochs']}")
    return LatentDataset(directory, manifest), dict(zip(captions, text.to(device)))


@torch.no_grad()
def write_shard(path: Path, items: list[dict], objective: TrainingObjective, autocast, batch_size: int,
                device: torch.device) -> None:
    """The VAE posteriors of these items, encoded `batch_size` at a time, as one shard file."""
    posteriors = {key: [] for key in POSTERIOR_KEYS}
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        images = torch.stack([item["image"] for item in chunk]).to(device)
        object_masks = torch.stack([item["mask"] for item in chunk]).to(device)
        with autocast:  # as in a training step, so both paths encode alike
            encoded = objective.vae_posteriors(images, conditioning.paint_mask_from_object(object_masks))
        for key in POSTERIOR_KEYS:
            posteriors[key].append(encoded[key].cpu())
    tensors = {key: torch.cat(parts).contiguous() for key, parts in posteriors.items()}
    tensors["mask"] = torch.stack([item["mask"] for item in items]).to(torch.uint8)  # (N, 1, H, W) in {0, 1}
    metadata = {"captions": json.dumps([item["caption"] for item in items])}
    atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata=metadata))


@torch.no_grad()
def write_text_embeddings(directory: Path, manifest: dict, objective: TrainingObjective, autocast,
                          batch_size: int) -> int:
    captions = {""}  # the empty prompt of classifier-free guidance training
    for path in all_shard_paths(directory, manifest):
        with safe_open(str(path), framework="pt") as file:
            captions.update(json.loads(file.metadata()["captions"]))
    captions = sorted(captions)
    embeddings = []
    for start in range(0, len(captions), batch_size):
        with autocast:
            embeddings.append(objective.encode_text(captions[start:start + batch_size]).cpu())
    tensors = {"embeddings": torch.cat(embeddings).contiguous()}  # (captions, context length, width)
    atomic_write(directory / TEXT_NAME,
                 lambda temporary: save_file(tensors, temporary, metadata={"captions": json.dumps(captions)}))
    return len(captions)


def precompute_latents(directory: str | Path, epochs: int, dataset, key: dict, objective: TrainingObjective,
                       autocast, batch_size: int, process: distributed.Process, shard_size: int = 256) -> dict:
    """Encode `epochs` epochs of the dataset into `directory` with the objective's frozen encoders, under
    `autocast`, `batch_size` items at a time; returns a summary."""
    if epochs < 1:
        raise ValueError(f"--precompute-latents needs at least 1 epoch, not {epochs}")
    directory = Path(directory)
    started = time.perf_counter()
    manifest = {"format": 1, "epochs": epochs, "shard_size": shard_size, "key": key}
    existing = read_manifest(directory)
    if existing is not None and existing != manifest:
        raise ValueError(f"{directory} already holds latents made otherwise "
                         f"({'; '.join(differences(existing, manifest))}); use another folder or delete it")
    if process.is_main:  # what an interrupted precomputation was writing when it was killed
        remove_temporary_files(directory)
    distributed.barrier()  # every process has compared (and the leftovers are gone) before any writes
    if existing is None and process.is_main:
        atomic_write(directory / MANIFEST_NAME, lambda temporary: Path(temporary).write_text(json.dumps(manifest)))
    num_items = manifest["key"]["num_items"]
    shards = [(epoch, shard) for epoch in range(epochs) for shard in range(math.ceil(num_items / shard_size))]
    mine = shards[process.rank::process.world_size]
    written = 0
    for epoch, shard in tqdm(mine, desc="precompute latents", unit="shard", disable=not process.is_main):
        path = shard_path(directory, epoch, shard)
        if not path.is_file():
            dataset.set_epoch(epoch)
            items = [dataset[index] for index in range(shard * shard_size, min((shard + 1) * shard_size, num_items))]
            write_shard(path, items, objective, autocast, batch_size, process.device)
            written += 1
    distributed.barrier()
    captions = write_text_embeddings(directory, manifest, objective, autocast, batch_size) if process.is_main else 0
    distributed.barrier()
    return {"latents": str(directory), "epochs": epochs, "items": num_items, "shards": len(shards),
            "shards_written_here": written, "captions": captions, "seconds": time.perf_counter() - started}
