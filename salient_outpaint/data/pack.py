"""Packing datasets into tar shards (the format and its reader: shards/), run as

    python -m salient_outpaint.data.shards pack --data SPEC [SPEC ...] --out DIR [--shard-size N]

The items of every source are checked, shuffled together by --seed, numbered, and written
--shard-size to a file, each file atomically. Folders and COCO keep their files' bytes; the toy
world's scenes are rendered to PNG.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import torch
from PIL import Image

from ..files import atomic_write
from ..outputs import check_output_folder, ends_in_one_line
from . import shards
from .check import check_data
from .images import to_uint8
from .specs import build_one


def png_bytes(image: torch.Tensor) -> bytes:
    """(3, H, W) in [-1, 1] or (1, H, W) in [0, 1] -> PNG bytes."""
    pixels = to_uint8(image * 2 - 1 if image.shape[0] == 1 else image)  # (C, H, W) uint8
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).squeeze(-1).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def raw_sample(dataset, index: int) -> tuple[str, bytes, bytes, list[str]]:
    """(image suffix, image bytes, mask bytes, captions) of one item of a dataset to pack: folders and
    COCO give their files' bytes untouched; the toy world renders its scene."""
    if hasattr(dataset, "pairs"):
        image, mask = dataset.pairs[index]
        return image.suffix.lower().lstrip("."), image.read_bytes(), mask.read_bytes(), list(dataset.captions[index])
    item = dataset[index]
    return "png", png_bytes(item["image"]), png_bytes(item["mask"]), [item["caption"]]


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_shard(path: Path, samples: list[tuple[int, tuple[str, bytes, bytes, list[str]]]]) -> None:
    def write(temporary: str) -> None:
        with tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT) as archive:
            for number, (suffix, image, mask, captions) in samples:
                key = f"{number:09d}"
                add_member(archive, f"{key}.{suffix}", image)
                add_member(archive, f"{key}.{shards.MASK}", mask)
                add_member(archive, f"{key}.{shards.CAPTIONS}", json.dumps(captions).encode())

    atomic_write(path, write)


def pack(specs: tuple[str, ...], out: str | Path, shard_size: int = 1000, seed: int = 0,
         toy_resolution: int = 128) -> str:
    """Check, shuffle and write every item of the datasets into OUT/shard-NNNNNN.tar; returns the
    `shards:` pattern that reads them."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, not {shard_size}")
    # Before the data are checked; the shards (.tar) cannot be any input's file: shards are refused as input.
    out = check_output_folder(out)
    shards.require_webdataset()
    datasets = [build_one(spec, toy_resolution, seed) for spec in specs]
    for spec, dataset in zip(specs, datasets):
        if isinstance(dataset, shards.ShardDataset):
            raise ValueError(f"{spec} is already shards")
        check_data(dataset, (spec,))
    everything = [(source, index) for source, dataset in enumerate(datasets) for index in range(len(dataset))]
    if not everything:
        raise ValueError(f"{' '.join(specs)} hold no items")
    order = torch.randperm(len(everything), generator=torch.Generator().manual_seed(seed)).tolist()
    shard_count = (len(everything) + shard_size - 1) // shard_size
    for shard in range(shard_count):
        numbers = range(shard * shard_size, min((shard + 1) * shard_size, len(everything)))
        write_shard(out / f"shard-{shard:06d}.tar",
                    [(number, raw_sample(datasets[everything[order[number]][0]], everything[order[number]][1]))
                     for number in numbers])
    return f"shards:{out}/shard-{{{0:06d}..{shard_count - 1:06d}}}.tar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salient_outpaint.data.shards", description=shards.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    packer = commands.add_parser("pack", help="write datasets into tar shards")
    packer.add_argument("--data", nargs="+", required=True,
                        help="dataset specs as train.py reads them: salient:ROOT[:CAPTIONS], "
                             "coco:IMAGES:CAPTIONS_JSON:MASKS, toy[:N]")
    packer.add_argument("--out", required=True, help="folder to write shard-NNNNNN.tar into")
    packer.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: 1000)")
    packer.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default: 0)")
    packer.add_argument("--toy-resolution", type=int, default=128, help="size of rendered toy scenes (default: 128)")
    args = parser.parse_args(argv)

    def work() -> int:
        try:
            pattern = pack(tuple(args.data), args.out, args.shard_size, args.seed, args.toy_resolution)
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(pattern)
        return 0

    return ends_in_one_line(work)
