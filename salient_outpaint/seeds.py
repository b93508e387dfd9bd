"""The seeds of the random streams, each mixed from the integers that key one draw.

A stream's seed is a polynomial in its keys, by Horner's rule over the stream's multipliers:

    keys (a, b, c), multipliers (m1, m2)  ->  (a * m1 + b) * m2 + c

distinct for distinct keys while each later key stays below the multiplier it follows (the
multipliers are primes far above any epoch, position or index). The streams and their keys:

    EPOCH_ORDER      (seed, epoch)                       the order of the items (training/batches.py) and
                                                         of the tar shards (data/shards/) in an epoch
    TRAINING_SAMPLE  (seed + 1, position)                every draw of one training sample: noise, timestep,
                                                         random masks (training/batches.py)
    AUGMENTATION     (seed, epoch, index)                an item's crop and flip (data/augment.py)
    TOY_SCENE        (seed, split offset, epoch, index)  a toy-world scene (data/synthetic.py)

Each keeps the multipliers it was born with, so every stream draws what it always drew. The last two
wrap their seed into [0, 2**63), so any seed works; the first two give torch the polynomial as it is
(torch takes -2**63 to 2**64 - 1 and refuses the rest), as they always have.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

WRAP = 2 ** 63


@dataclass(frozen=True)
class Stream:
    multipliers: tuple[int, ...]  # one fewer than the keys
    wrap: bool  # seed mod 2**63


EPOCH_ORDER = Stream((1_000_003,), wrap=False)
TRAINING_SAMPLE = Stream((2_654_435_761,), wrap=False)
AUGMENTATION = Stream((1_000_003, 1_000_000_007), wrap=True)
TOY_SCENE = Stream((1_000_033, 1_000_037, 10_000_019), wrap=True)


def stream_generator(stream: Stream, *keys: int) -> torch.Generator:
    """A fresh generator seeded by the stream's mix of `keys` (one more key than multipliers)."""
    seed = keys[0]
    for multiplier, key in zip(stream.multipliers, keys[1:], strict=True):
        seed = seed * multiplier + key
    return torch.Generator().manual_seed(seed % WRAP if stream.wrap else seed)
