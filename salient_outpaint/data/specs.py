"""Datasets named on the command line (`--data SPEC [SPEC ...]`):

  toy[:N]                          N scenes of the synthetic toy world (default 10000)
  toyzoom[:N]                      N toy scenes drawn at 2x and 4x the training size, a random window of
                                   the training size from each (the close-ups --hires's tiles see)
  salient:ROOT[:CAPTIONS]          a salient-object folder (ROOT/images, ROOT/masks), captions
                                   from a JSONL/CSV file (see docs/datasets.md)
  coco:IMAGES:CAPTIONS_JSON:MASKS  COCO images, COCO caption annotations, a folder of masks
  shards:PATTERN                   tar shards made by `python -m salient_outpaint.data.shards pack`,
                                   streamed (PATTERN: a glob or {000..009} braces); alone, not mixed

Several specs (other than shards) form a weighted mixture (`--data-weights`, default equal).
"""
from __future__ import annotations

from torch.utils.data import Dataset

from .datasets import CocoDataset, MixtureDataset, SalientFolderDataset, load_captions
from .shards import ShardDataset
from .synthetic import ToyWorldDataset

MIXTURE_LENGTH_PER_DATASET = 100_000
TOY_ZOOMS = {"toy": (1,), "toyzoom": (2, 4)}  # spec -> the sizes its scenes are drawn at, x --resolution


def build_one(spec: str, size: int, seed: int) -> Dataset:
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    if kind in TOY_ZOOMS and len(parts) <= 1:
        if parts and not (parts[0].isdigit() and int(parts[0]) > 0):
            raise ValueError(f"--data {spec}: {kind}:N needs a whole number of scenes N of at least 1")
        return ToyWorldDataset(num_items=int(parts[0]) if parts else 10_000, size=size, seed=seed, split="train",
                               zooms=TOY_ZOOMS[kind])
    if kind == "salient" and 1 <= len(parts) <= 2:
        captions = load_captions(parts[1]) if len(parts) == 2 else None
        return SalientFolderDataset(parts[0], size=size, captions=captions, seed=seed)
    if kind == "coco" and len(parts) == 3:
        return CocoDataset(parts[0], parts[1], parts[2], size=size, seed=seed)
    if kind == "shards" and rest:
        return ShardDataset(rest, size=size, seed=seed)
    raise ValueError(f"cannot read the dataset spec {spec!r}; expected toy[:N], toyzoom[:N], salient:ROOT[:CAPTIONS], "
                     "coco:IMAGES:CAPTIONS_JSON:MASKS or shards:PATTERN")


def build_dataset(specs: tuple[str, ...], weights: tuple[float, ...], size: int, seed: int) -> Dataset:
    """One dataset, or a weighted mixture of several. Every returned dataset has `set_epoch`."""
    if not specs:
        raise ValueError("no dataset given; pass --data (e.g. --data toy)")
    if len(specs) > 1 and any(spec.startswith("shards:") for spec in specs):
        raise ValueError("shards:PATTERN is streamed in order and cannot be mixed with other --data specs; "
                         "pack all the data into one set of shards (the pack command takes several sources)")
    datasets = [build_one(spec, size, seed) for spec in specs]
    for spec, dataset in zip(specs, datasets):
        if len(dataset) == 0:
            raise ValueError(f"--data {spec} holds no items")
    if len(datasets) == 1:
        return datasets[0]
    return MixtureDataset(datasets, list(weights) or [1.0] * len(datasets),
                          length=MIXTURE_LENGTH_PER_DATASET * len(datasets), seed=seed)
