"""Key remapping as data: a `KeyMap` says, for every parameter of one of our modules, which
tensor(s) of a foreign checkpoint hold it. Converting in either direction is then one loop.

Maps are built from our module's own key list and a table of prefix rules, so a rule table
is the whole description of a format (see `ldm.py`, `diffusers.py`).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import torch


@dataclass(frozen=True)
class Source:
    """Where one of our tensors lives in a foreign checkpoint."""
    key: str
    conv1x1: bool = False  # the foreign model stores this Linear as a 1x1 convolution
    # Ours is slice `part` of `parts` equal slices along dim 0 of the foreign tensor (OpenCLIP's fused
    # q|k|v projection, which our text encoder keeps apart): a view, so loading copies nothing.
    part: int = 0
    parts: int = 1


@dataclass(frozen=True)
class KeyMap:
    format: str
    sources: dict[str, Source]  # our key -> where it lives
    # Foreign keys that the format carries but this architecture never uses (e.g. the last
    # OpenCLIP block, which SD2 skips); they are neither loaded nor reported as unexpected.
    unused: tuple[str, ...] = field(default=())
    # The prefix under which this component's keys live in a multi-component file; foreign keys
    # under it that the map does not need are unexpected. Keys outside it belong to others.
    namespace: str = ""

    def foreign_keys(self) -> set[str]:
        return {source.key for source in self.sources.values()}

    def is_unused(self, foreign_key: str) -> bool:
        return any(foreign_key.startswith(prefix) for prefix in self.unused)


def rename(key: str, rules: list[tuple[str, str]]) -> str:
    """Apply the longest matching (our_prefix, their_prefix) rule; keys with no rule keep their name."""
    best = max((rule for rule in rules if key.startswith(rule[0])), key=lambda rule: len(rule[0]), default=None)
    return key if best is None else best[1] + key[len(best[0]):]


def map_by_prefix(format: str, our_keys, rules: list[tuple[str, str]], conv1x1_prefixes: tuple[str, ...] = (),
                  unused: tuple[str, ...] = ()) -> KeyMap:
    sources = {key: Source(rename(key, rules), conv1x1=key.startswith(conv1x1_prefixes) and key.endswith("weight"))
               for key in our_keys}
    return KeyMap(format, sources, unused)


def prefixed(key_map: KeyMap, prefix: str) -> KeyMap:
    """The same map for a checkpoint that nests the component under `prefix` (e.g. 'first_stage_model.')."""
    sources = {ours: replace(source, key=prefix + source.key) for ours, source in key_map.sources.items()}
    return KeyMap(key_map.format, sources, tuple(prefix + key for key in key_map.unused), namespace=prefix)


def gather(foreign: Mapping[str, torch.Tensor], key_map: KeyMap) -> Iterator[tuple[str, torch.Tensor]]:
    """Our (key, tensor) pairs from a foreign state dict, one at a time, so that a lazily read
    checkpoint (io.open_state_dict) is read one tensor at a time. Keys the map needs but `foreign`
    lacks are skipped (the strict loader reports them)."""
    for our_key, source in key_map.sources.items():
        if source.key not in foreign:
            continue
        tensor = foreign[source.key]
        if source.parts > 1:
            tensor = tensor.chunk(source.parts, dim=0)[source.part]
        if source.conv1x1 and tensor.dim() == 4:
            tensor = tensor[:, :, 0, 0]
        yield our_key, tensor


def to_foreign(ours: dict[str, torch.Tensor], key_map: KeyMap) -> dict[str, torch.Tensor]:
    """Scatter our state dict into the foreign layout (the inverse of `gather`)."""
    foreign, slices = {}, defaultdict(dict)
    for our_key, tensor in ours.items():
        source = key_map.sources[our_key]
        if source.conv1x1:
            tensor = tensor[:, :, None, None]
        if source.parts > 1:
            slices[source.key][source.part] = tensor
        else:
            foreign[source.key] = tensor.contiguous()
    for key, parts in slices.items():
        foreign[key] = torch.cat([parts[index] for index in sorted(parts)], dim=0)
    return foreign
