"""Salient-object folders, COCO with masks, captions files, and weighted mixtures (docs/datasets.md).

Every item is {"image": (3, S, S) in [-1, 1], "mask": (1, S, S) in {0, 1}, 1 = object, "caption": str},
and its randomness (crop, flip, which caption) is a pure function of (seed, epoch, index), so that a
resumed or multi-process run reads exactly the same samples.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .augment import augment
from .images import load_image, load_mask

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# (images, masks) sub-folder names: our layout, DUTS-TR, DUTS-TE, DIS5K
FOLDER_LAYOUTS = (("images", "masks"), ("DUTS-TR-Image", "DUTS-TR-Mask"), ("DUTS-TE-Image", "DUTS-TE-Mask"),
                  ("im", "gt"))
SHOWN = 5


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % 2 ** 63)


def load_captions(path: str | Path) -> dict[str, list[str]]:
    """A JSONL ({"image": ..., "caption": ...} per line; "file_name"/"text" also read) or CSV file
    (header with image,caption) -> image file stem -> its captions."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the captions file {path} does not exist")
    rows: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as file:
            rows = [(number, row) for number, row in enumerate(csv.DictReader(file), start=2)]
    else:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {number} is not JSON ({error.msg})") from None
    captions: dict[str, list[str]] = {}
    for number, row in rows:
        image, caption = row.get("image") or row.get("file_name"), row.get("caption") or row.get("text")
        if not image or caption is None:
            raise ValueError(f"{path} line {number} needs an image (or file_name) and a caption (or text)")
        captions.setdefault(Path(image).stem, []).append(caption)
    return captions


def find_layout(root: Path) -> tuple[Path, Path]:
    for images, masks in FOLDER_LAYOUTS:
        if (root / images).is_dir() and (root / masks).is_dir():
            return root / images, root / masks
    expected = ", ".join(f"{images}/ + {masks}/" for images, masks in FOLDER_LAYOUTS)
    raise FileNotFoundError(f"{root} is not a salient-object folder: expected one of {expected}")


def images_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)


def pair_masks(images: list[Path], masks_folder: Path) -> list[tuple[Path, Path]]:
    """Each image with masks_folder/<stem>.png; any missing mask is an error naming the first few."""
    pairs, missing = [], []
    for image in images:
        mask = masks_folder / f"{image.stem}.png"
        (pairs if mask.is_file() else missing).append((image, mask))
    if missing:
        shown = ", ".join(f"{image.name} (expected {mask})" for image, mask in missing[:SHOWN])
        raise FileNotFoundError(f"{len(missing)} image(s) have no mask: {shown}")
    return pairs


class PairedDataset(Dataset):
    """(image, mask, captions) triples, augmented per (seed, epoch, index)."""

    def __init__(self, pairs: list[tuple[Path, Path]], captions: list[list[str]], size: int, seed: int):
        self.pairs, self.captions, self.size, self.seed, self.epoch = pairs, captions, size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path = self.pairs[index]
        generator = item_generator(self.seed, self.epoch, index)
        image, mask = load_image(image_path), load_mask(mask_path)
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"{mask_path} is {tuple(mask.shape[-2:])} but its image {image_path} is "
                             f"{tuple(image.shape[-2:])}")
        image, mask = augment(image, mask, self.size, generator)
        options = self.captions[index]
        caption = options[int(torch.randint(len(options), (), generator=generator))] if options else ""
        return {"image": image, "mask": mask, "caption": caption}


class SalientFolderDataset(PairedDataset):
    """ROOT/images/*.jpg + ROOT/masks/*.png (or the DUTS and DIS5K folder names). Without a captions
    file every caption is empty (unconditional); with one, every image must have a caption."""

    def __init__(self, root: str | Path, size: int, captions: dict[str, list[str]] | None = None, seed: int = 0):
        images_folder, masks_folder = find_layout(Path(root))
        images = images_in(images_folder)
        if not images:
            raise FileNotFoundError(f"{images_folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if captions is not None:
            uncaptioned = [image.name for image in images if image.stem not in captions]
            if uncaptioned:
                raise ValueError(f"{len(uncaptioned)} image(s) in {images_folder} have no caption in the captions "
                                 f"file: {', '.join(uncaptioned[:SHOWN])}")
        super().__init__(pair_masks(images, masks_folder),
                         [captions[image.stem] if captions else [] for image in images], size, seed)


class CocoDataset(PairedDataset):
    """COCO images, their caption annotations (captions_*.json; one of an image's captions is drawn
    per epoch) and a folder of salient-object masks named <image stem>.png."""

    def __init__(self, images_folder: str | Path, captions_json: str | Path, masks_folder: str | Path, size: int,
                 seed: int = 0):
        captions_json = Path(captions_json)
        if not captions_json.is_file():
            raise FileNotFoundError(f"the COCO captions file {captions_json} does not exist")
        annotations = json.loads(captions_json.read_text())
        captions_by_id: dict[int, list[str]] = {}
        for annotation in annotations.get("annotations", []):
            captions_by_id.setdefault(annotation["image_id"], []).append(annotation["caption"].strip())
        entries = sorted(annotations.get("images", []), key=lambda entry: entry["file_name"])
        images = [Path(images_folder) / entry["file_name"] for entry in entries]
        if not images:
            raise ValueError(f"{captions_json} lists no images")
        super().__init__(pair_masks(images, Path(masks_folder)),
                         [captions_by_id.get(entry["id"], []) for entry in entries], size, seed)


class MixtureDataset(Dataset):
    """`length` items per epoch, each drawn from dataset k with probability weights[k] / sum(weights)."""

    def __init__(self, datasets: list[Dataset], weights: list[float], length: int, seed: int = 0):
        if len(weights) != len(datasets) or any(weight <= 0 for weight in weights):
            raise ValueError(f"give one positive weight per dataset; got {weights} for {len(datasets)} datasets")
        self.datasets, self.length, self.seed, self.epoch = datasets, length, seed, 0
        self.probabilities = torch.tensor(weights, dtype=torch.float64) / sum(weights)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        generator = item_generator(self.seed + 1, self.epoch, index)
        choice = int(torch.multinomial(self.probabilities, 1, generator=generator))
        dataset = self.datasets[choice]
        return dataset[int(torch.randint(len(dataset), (), generator=generator))]
