"""Tar shards: a dataset as a few large files read front to back (the webdataset format).

    python -m salient_outpaint.data.shards pack --data salient:data/DUTS-TR:captions.jsonl coco:... \\
        --out data/shards --shard-size 1000
    python train.py --data "shards:data/shards/shard-{000000..000173}.tar" ...

Each shard is a plain tar file holding, per sample, three members with one key:

    000000042.jpg              the image file's own bytes (any image format; the suffix says which)
    000000042.mask.png         its object mask (white = object), the same size
    000000042.captions.json    its captions, a JSON list (one is drawn per read; [] = no text)

Packing shuffles the samples of all sources together (by --seed) and numbers them; the number is
the sample's index for its augmentation, (seed, epoch, index) as for folders.

Reading streams: a shard is read once from front to back (webdataset's tar reader), never seeked.
Epoch e deals the shards out to the processes, in an order shuffled by (seed, e): process r of N
reads shards r, r + N, r + 2N, ... of that order, and its samples form one endless stream, epoch
after epoch. So in every epoch every sample is read by exactly one process, once. Micro-batch k of a
process is samples [k * B, (k + 1) * B) of its stream; its DataLoader workers share the micro-batches
out (worker w makes those with (k - first) mod W = w, and passes over the others' samples without
decoding them), so the batches do not depend on the number of workers, and a resumed run skips to its
micro-batch through the shard sizes. They do depend on the number of processes: unlike folders,
shards give the same batches only on the same number of processes (see docs/datasets.md).
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image

from ..files import atomic_write
from .augment import augment, item_generator
from .check import DataCheckError
from .images import mask_of, open_image, rgb_of, to_uint8, upright_size

MASK, CAPTIONS = "mask.png", "captions.json"
THREADS = 8


def require_webdataset() -> None:
    try:
        import webdataset  # noqa: F401
    except ImportError:
        raise ValueError("shards need the webdataset package: pip install 'salient-outpaint[shards]' "
                         "(or pip install webdataset)") from None


def expand(pattern: str) -> list[Path]:
    """The shard files of a pattern: {000..009} braces or a glob, in that order (globs sorted)."""
    from braceexpand import braceexpand  # comes with webdataset (the `shards` extra)

    names = list(braceexpand(pattern)) if "{" in pattern else sorted(glob.glob(pattern))
    paths = [Path(name) for name in names]
    missing = [str(path) for path in paths if not path.is_file()]
    if not paths or missing:
        raise FileNotFoundError(f"shards:{pattern} " + (f"names {len(missing)} file(s) that do not exist, e.g. "
                                                        f"{missing[0]}" if missing else "matches no files") +
                                "; give the pattern the pack command printed")
    return paths


def sample_keys(path: Path) -> list[str] | str:
    """The sample keys of a shard, in order, from its tar headers (a seek over each member, no data
    read); or what is wrong with the file."""
    keys = []
    try:
        with tarfile.open(path, "r:") as archive:
            for name in archive.getnames():
                key = name.split(".", 1)[0]
                if not keys or keys[-1] != key:
                    keys.append(key)
    except (tarfile.TarError, OSError, EOFError) as error:
        return f"{path}: not a readable tar file ({type(error).__name__}: {error})"
    return keys


class ShardDataset:
    """The samples of tar shards, as micro-batches of a process's stream (see the module docstring).
    Not indexable: `len` counts the samples, `first_items` serves validation."""

    def __init__(self, pattern: str, size: int, seed: int = 0):
        require_webdataset()
        self.pattern, self.paths, self.size, self.seed = pattern, expand(pattern), size, seed
        with ThreadPoolExecutor(THREADS) as pool:
            keys = list(pool.map(sample_keys, self.paths))
        unreadable = [problem for problem in keys if isinstance(problem, str)]
        if unreadable:  # even --skip-data-check needs the sample counts
            raise DataCheckError(unreadable, f"shards:{pattern}")
        self.counts = [len(shard_keys) for shard_keys in keys]  # samples per shard

    def __len__(self) -> int:
        return sum(self.counts)

    def problems(self) -> list[str]:
        with ThreadPoolExecutor(THREADS) as pool:
            return [problem for problems in pool.map(shard_problems, self.paths) for problem in problems]

    def item(self, sample: dict, epoch: int) -> dict:
        """A raw sample (member suffix -> bytes) -> {"image", "mask", "caption"}, augmented by
        (seed, epoch, its number)."""
        image_suffix = next(suffix for suffix in sample if not suffix.startswith("__") and suffix not in (MASK, CAPTIONS))
        # read as the folder datasets read files: upright by EXIF, 16-bit at full depth
        image = rgb_of(open_image(sample[image_suffix], "image")) * 2 - 1  # (3, H, W) in [-1, 1]
        mask = mask_of(open_image(sample[MASK], "mask"))  # (1, H, W) in [0, 1]
        generator = item_generator(self.seed, epoch, int(sample["__key__"]))
        image, mask = augment(image, mask, self.size, generator)
        captions = json.loads(sample[CAPTIONS])
        caption = captions[int(torch.randint(len(captions), (), generator=generator))] if captions else ""
        return {"image": image, "mask": mask, "caption": caption}

    def epoch_shards(self, epoch: int, rank: int, world_size: int) -> list[int]:
        order = torch.randperm(len(self.paths), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        return order[rank::world_size].tolist()

    def micro_batches(self, rank: int, world_size: int, batch_size: int, start: int, worker: int = 0,
                      workers: int = 1) -> Iterator[dict]:
        """Micro-batches start + worker, start + worker + workers, ... of process `rank`'s stream,
        endlessly: each {"image": (B, 3, S, S), "mask": (B, 1, S, S), "caption": [B strings]}."""
        if len(self.paths) < world_size:
            raise ValueError(f"shards:{self.pattern} has {len(self.paths)} shard(s) for {world_size} processes; "
                             "each process needs at least one: pack into more shards (--shard-size)")
        wanted = start + worker  # the next micro-batch this worker makes (the DataLoader asks worker 0 first)
        position, items = 0, []  # position: of the next sample in the process's stream
        epoch = 0
        while True:
            for shard in self.epoch_shards(epoch, rank, world_size):
                end = position + self.counts[shard]
                if end <= wanted * batch_size:  # nothing of ours in it: skip without opening
                    position = end
                    continue
                for sample in read_samples(self.paths[shard]):
                    if position // batch_size == wanted:
                        items.append(self.item(sample, epoch))
                        if len(items) == batch_size:
                            yield collate(items)
                            items, wanted = [], wanted + workers
                    position += 1
                    if wanted * batch_size >= end:  # the rest of this shard is other workers'
                        break
                position = end
            epoch += 1

    def first_items(self, count: int) -> list[dict]:
        """The first samples of the shards in pattern order, as epoch 0 augments them: the default
        validation images."""
        samples = (sample for path in self.paths for sample in read_samples(path))
        return [self.item(sample, 0) for sample, _ in zip(samples, range(count))]


def read_samples(path: Path) -> Iterator[dict]:
    """A shard's samples in order, streamed: {"__key__": "000000042", "jpg": bytes, "mask.png": ..., ...}."""
    from webdataset.tariterators import tarfile_samples

    return tarfile_samples(iter([{"url": str(path)}]))


def collate(items: list[dict]) -> dict:
    return {"image": torch.stack([item["image"] for item in items]),
            "mask": torch.stack([item["mask"] for item in items]),
            "caption": [item["caption"] for item in items]}


def shard_problems(path: Path) -> list[str]:
    """Every sample of a shard complete (image, mask, captions), its image and mask headers readable
    and of one size, its captions a JSON list of strings."""
    problems = []
    try:
        with tarfile.open(path, "r:") as archive:
            samples: dict[str, dict[str, tarfile.TarInfo]] = {}
            for member in archive.getmembers():
                key, _, suffix = member.name.partition(".")
                samples.setdefault(key, {})[suffix] = member
            for key, members in samples.items():
                where = f"{path.name}: sample {key}"
                images = [suffix for suffix in members if suffix not in (MASK, CAPTIONS)]
                if len(images) != 1 or MASK not in members or CAPTIONS not in members:
                    problems.append(f"{where} has members {sorted(members)}; expected one image, {MASK} and {CAPTIONS}")
                    continue
                sizes = []
                for suffix in (images[0], MASK):
                    try:  # the size as training reads it: upright by EXIF
                        with Image.open(archive.extractfile(members[suffix])) as file:
                            sizes.append(upright_size(file))
                    except Exception as error:  # Pillow raises many types for damaged files
                        problems.append(f"{where}: cannot read its {suffix} ({type(error).__name__}: {error})")
                if len(sizes) == 2 and sizes[0] != sizes[1]:
                    problems.append(f"{where}: the mask is {sizes[1][0]}x{sizes[1][1]} but the image "
                                    f"{sizes[0][0]}x{sizes[0][1]} (width x height)")
                try:
                    captions = json.loads(archive.extractfile(members[CAPTIONS]).read())
                    assert isinstance(captions, list) and all(isinstance(caption, str) for caption in captions)
                except (ValueError, AssertionError):
                    problems.append(f"{where}: {CAPTIONS} is not a JSON list of strings")
    except (tarfile.TarError, OSError, EOFError) as error:
        problems.append(f"{path}: not a readable tar file ({type(error).__name__}: {error})")
    return problems


# Packing


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
                add_member(archive, f"{key}.{MASK}", mask)
                add_member(archive, f"{key}.{CAPTIONS}", json.dumps(captions).encode())

    atomic_write(path, write)


def pack(specs: tuple[str, ...], out: str | Path, shard_size: int = 1000, seed: int = 0,
         toy_resolution: int = 128) -> str:
    """Check, shuffle and write every item of the datasets into OUT/shard-NNNNNN.tar; returns the
    `shards:` pattern that reads them."""
    from .check import check_data
    from .specs import build_one

    require_webdataset()
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, not {shard_size}")
    datasets = [build_one(spec, toy_resolution, seed) for spec in specs]
    for spec, dataset in zip(specs, datasets):
        if isinstance(dataset, ShardDataset):
            raise ValueError(f"{spec} is already shards")
        check_data(dataset, (spec,))
    everything = [(source, index) for source, dataset in enumerate(datasets) for index in range(len(dataset))]
    if not everything:
        raise ValueError(f"{' '.join(specs)} hold no items")
    order = torch.randperm(len(everything), generator=torch.Generator().manual_seed(seed)).tolist()
    out = Path(out)
    shards = (len(everything) + shard_size - 1) // shard_size
    for shard in range(shards):
        numbers = range(shard * shard_size, min((shard + 1) * shard_size, len(everything)))
        write_shard(out / f"shard-{shard:06d}.tar",
                    [(number, raw_sample(datasets[everything[order[number]][0]], everything[order[number]][1]))
                     for number in numbers])
    return f"shards:{out}/shard-{{{0:06d}..{shards - 1:06d}}}.tar"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salient_outpaint.data.shards", description=__doc__,
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
    try:
        pattern = pack(tuple(args.data), args.out, args.shard_size, args.seed, args.toy_resolution)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(pattern)
    return 0


if __name__ == "__main__":
    sys.exit(main())
