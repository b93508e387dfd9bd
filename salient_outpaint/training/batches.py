"""The micro-batches of one process, read ahead by DataLoader workers while the model computes.

Micro-batch k = step * accumulation + micro_step of process `rank` is a pure function of
(seed, k, rank): its items come from fixed stream positions (sampler.py) for indexable datasets, or
from a fixed stretch of the process's stream for tar shards (data/shards.py). Which worker reads it
does not matter, so `--num-workers` changes how soon batches are ready, never what they hold, and a
resumed run starts reading at its step.

    workers 0:  the training thread reads each micro-batch when it needs it
    workers W:  W processes read up to W * PREFETCH micro-batches ahead; on CUDA they land in
                pinned memory, so the copy to the GPU overlaps compute
"""
from __future__ import annotations

from itertools import islice
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..data.shards import ShardDataset
from .config import TrainConfig
from .distributed import Process
from .sampler import batch_positions, item_at

PREFETCH = 2  # micro-batches each worker reads ahead


class IndexedMicroBatches(Dataset):
    """Micro-batch k of this process, read from an indexable dataset (folders, toy, latents)."""

    def __init__(self, items, config: TrainConfig, rank: int, world_size: int):
        self.items, self.config, self.rank, self.world_size = items, config, rank, world_size

    def __len__(self) -> int:
        return self.config.steps * self.config.grad_accumulation

    def __getitem__(self, k: int) -> dict:
        config = self.config
        step, micro_step = divmod(k, config.grad_accumulation)
        positions = batch_positions(step, micro_step, self.rank, self.world_size, config.batch_size,
                                    config.grad_accumulation)
        return collate_at(self.items, positions, config.seed)


def collate_at(dataset, positions, seed: int) -> dict:
    """The items at these stream positions as one batch: tensors stacked, captions listed."""
    items = []
    for position in positions:
        epoch, index = item_at(position, len(dataset), seed)
        dataset.set_epoch(epoch)
        items.append(dataset[index])
    return {key: torch.stack([item[key] for item in items]) if isinstance(items[0][key], torch.Tensor)
            else [item[key] for item in items] for key in items[0]}


class StreamedMicroBatches(IterableDataset):
    """Micro-batches start, start + 1, ... of this process's shard stream; in a worker, only that
    worker's share ((k - start) mod W = w), which the DataLoader interleaves back into order."""

    def __init__(self, shards: ShardDataset, config: TrainConfig, rank: int, world_size: int, start: int):
        self.shards, self.config, self.rank, self.world_size, self.start = shards, config, rank, world_size, start

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        return self.shards.micro_batches(self.rank, self.world_size, self.config.batch_size, self.start,
                                         worker.id if worker else 0, worker.num_workers if worker else 1)


def step_batches(items, config: TrainConfig, process: Process, start_step: int) -> Iterator[list[dict]]:
    """For each step from start_step to config.steps, its micro-batches (on the CPU)."""
    start, end = start_step * config.grad_accumulation, config.steps * config.grad_accumulation
    if isinstance(items, ShardDataset):
        dataset, sampler = StreamedMicroBatches(items, config, process.rank, process.world_size, start), None
    else:
        dataset, sampler = IndexedMicroBatches(items, config, process.rank, process.world_size), range(start, end)
    loader = DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=config.num_workers,
                        prefetch_factor=PREFETCH if config.num_workers else None,
                        pin_memory=process.device.type == "cuda")
    micro_batches = islice(loader, end - start)
    for _ in range(start_step, config.steps):
        yield list(islice(micro_batches, config.grad_accumulation))
