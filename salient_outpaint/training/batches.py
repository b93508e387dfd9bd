"""Which items a process trains on at each step, as pure functions of (seed, step, rank), and the
DataLoader that reads them ahead of the step.

The data stream is an endless sequence of positions; position p is item permutation_e[p mod N]
of epoch e = p div N, each epoch shuffled with its own seed. Step s consumes the positions
[s * G, (s + 1) * G) for the global batch G = batch * processes * accumulation, split into
contiguous slices per micro-step and rank. So a resumed run, or the same global batch on any
number of processes, sees exactly the same items, and every per-sample random draw (noise,
timestep, random masks) is keyed by its position too (`sample_generator`). Tar shards are read
as a fixed stretch of each process's stream instead (data/shards/).

Which DataLoader worker reads a micro-batch does not matter, so `--num-workers` changes how soon
batches are ready, never what they hold, and a resumed run starts reading at its step:

    workers 0:  the training thread reads each micro-batch when it needs it
    workers W:  W processes read up to W * PREFETCH micro-batches ahead; on CUDA they land in
                pinned memory, so the copy to the GPU overlaps compute
"""
from __future__ import annotations

from functools import lru_cache
from itertools import islice
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..data.shards import ShardDataset
from ..seeds import EPOCH_ORDER, TRAINING_SAMPLE, stream_generator
from .config import TrainConfig
from ..distributed import Process

PREFETCH = 2  # micro-batches each worker reads ahead


def batch_positions(step: int, micro_step: int, rank: int, world_size: int, batch_size: int,
                    grad_accumulation: int) -> range:
    global_batch = batch_size * world_size * grad_accumulation
    start = step * global_batch + (micro_step * world_size + rank) * batch_size
    return range(start, start + batch_size)


@lru_cache(maxsize=4)
def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(num_items, generator=stream_generator(EPOCH_ORDER, seed, epoch))


def item_at(position: int, num_items: int, seed: int) -> tuple[int, int]:
    """(epoch, dataset index) of a stream position."""
    epoch, offset = divmod(position, num_items)
    return epoch, int(epoch_permutation(num_items, seed, epoch)[offset])


def sample_generator(seed: int, position: int) -> torch.Generator:
    """The RNG for every random draw that belongs to one training sample."""
    return stream_generator(TRAINING_SAMPLE, seed + 1, position)


def collate_at(dataset, positions, seed: int) -> dict:
    """The items at these stream positions as one batch: tensors stacked, captions listed."""
    items = []
    for position in positions:
        epoch, index = item_at(position, len(dataset), seed)
        dataset.set_epoch(epoch)
        items.append(dataset[index])
    return {key: torch.stack([item[key] for item in items]) if isinstance(items[0][key], torch.Tensor)
            else [item[key] for item in items] for key in items[0]}


class IndexedMicroBatches(Dataset):
    """Micro-batch k = step * accumulation + micro_step of this process, read from an indexable
    dataset (folders, toy, latents)."""

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
