"""Which items a process trains on at each step, as pure functions of (seed, step, rank).

The data stream is an endless sequence of positions; position p is item permutation_e[p mod N]
of epoch e = p div N, each epoch shuffled with its own seed. Step s consumes the positions
[s * G, (s + 1) * G) for the global batch G = batch * processes * accumulation, split into
contiguous slices per micro-step and rank. So a resumed run, or the same global batch on any
number of processes, sees exactly the same items, and every per-sample random draw (noise,
timestep, random masks) is keyed by its position too.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..seeds import EPOCH_ORDER, TRAINING_SAMPLE, stream_generator


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
