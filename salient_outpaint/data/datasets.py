"""Salient-object folders, COCO with masks, captions files, and weighted mixtures (docs/datasets.md).

Every item is {"image": (3, S, S) in [-1, 1], "mask": (1, S, S) in {0, 1}, 1 = object, "caption": str},
and its randomness (crop, flip, which caption) is a pure function of (seed, epoch, index), so that a
resumed or multi-process run reads exactly the same samples. Problems a user can fix stop the run
before step 0, not hours in: a wrong folder, an uncaptioned image or a bad captions line as the
dataset is built; missing, unreadable or mis-sized files in the data check (`problems`, check.py).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..inputs import check_mask_size
from .augment import augment, item_generator
from .check import pairs_problems
from .images import IMAGE_SUFFIXES, load_image, load_mask
from .layouts import dataset_images

SHOWN = 5  # how many offending files an error message lists


def caption_key(name: str) -> str:
    """"DUTS-TR-Image/sun_abc.jpg", "sun_abc.jpg" and "sun_abc" all name the image with stem sun_abc."""
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name


def first_present(row: dict, keys: tuple[str, ...]):
    return next((row[key] for key in keys if row.get(key) is not None), None)


def caption_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of a JSONL or CSV captions file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: tolerate a byte-order mark
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(file)
                header = reader.fieldnames or []
                if not {"image", "file_name"} & set(header) or not {"caption", "text"} & set(header):
                    raise ValueError(f"{path} needs a header line naming an image and a caption column, "
                                     f"e.g. 'image,caption'; its first line is {','.join(header)!r}")
                return [(reader.line_num, row) for row in reader]
            rows = []
            for number, line in enumerate(file, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path} line {number} is not JSON ({error.msg}); each line must be one "
                                     'object like {"image": "name.jpg", "caption": "..."}') from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path} line {number} is not a JSON object; each line must be one "
                                     'object like {"image": "name.jpg", "caption": "..."}')
                rows.append((number, row))
            return rows
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; save the captions file as UTF-8") from None


def load_captions(path: str | Path) -> dict[str, list[str]]:
    """A JSONL file ({"image": ..., "caption": ...} per line; "file_name"/"text" are read too) or a CSV
    file (header `image,caption`) -> image file stem -> its captions (an image may have several)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the captions file {path} does not exist")
    captions: dict[str, list[str]] = {}
    for number, row in caption_rows(path):
        image, caption = first_present(row, ("image", "file_name")), first_present(row, ("caption", "text"))
        if not isinstance(image, str) or not image.strip() or not isinstance(caption, str):
            raise ValueError(f"{path} line {number} needs an image name (\"image\" or \"file_name\") and a caption "
                             f"text (\"caption\" or \"text\"); it holds {json.dumps(row)[:200]}")
        captions.setdefault(caption_key(image.strip()), []).append(caption.strip())
    if not captions:
        raise ValueError(f"{path} holds no captions")
    return captions


def uncaptioned_images(images: list[Path], captions: dict[str, list[str]]) -> list[Path]:
    """The images without a caption in `captions` (stem -> captions, see load_captions): what the data
    refuses before training, and what `python -m salient_outpaint.data.captions --check` lists."""
    return [image for image in images if not captions.get(image.stem)]


def pair_masks(images: list[Path], masks_folder: Path) -> list[tuple[Path, Path]]:
    """Each image with the mask it needs, masks_folder/<stem>.png (the data check reports missing ones)."""
    return [(image, masks_folder / f"{image.stem}.png") for image in images]


def as_caption_lists(captions: dict) -> dict[str, list[str]]:
    """Accept stem -> caption as well as stem -> [captions]."""
    return {stem: [value] if isinstance(value, str) else list(value) for stem, value in captions.items()}


class PairedDataset(Dataset):
    """(image, mask, captions) triples, augmented per (seed, epoch, index); one caption drawn per item."""

    def __init__(self, pairs: list[tuple[Path, Path]], captions: list[list[str]], size: int, seed: int):
        self.pairs, self.captions, self.size, self.seed, self.epoch = pairs, captions, size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def problems(self) -> list[str]:
        return pairs_problems(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path = self.pairs[index]
        generator = item_generator(self.seed, self.epoch, index)
        image, mask = load_image(image_path), load_mask(mask_path)  # (3, H, W), (1, H, W)
        check_mask_size(mask.shape[-2:], image.shape[-2:], mask=f"the mask {mask_path}",
                        image=f"its image {image_path}")
        image, mask = augment(image, mask, self.size, generator)
        options = self.captions[index]
        caption = options[int(torch.randint(len(options), (), generator=generator))] if options else ""
        return {"image": image, "mask": mask, "caption": caption}


class SalientFolderDataset(PairedDataset):
    """A salient-object folder in any layout of layouts.py (ROOT/images/<name>.jpg + ROOT/masks/<name>.png,
    DUTS, DIS5K, MSRA-10K ...). Without captions every caption is empty; with them (stem -> captions,
    see load_captions) every image must have at least one."""

    def __init__(self, root: str | Path, size: int, captions: dict[str, list[str]] | None = None, seed: int = 0):
        layout, images = dataset_images(root)
        if captions is None:
            caption_lists = [[] for _ in images]
        else:
            captions = as_caption_lists(captions)
            uncaptioned = uncaptioned_images(images, captions)
            if uncaptioned:
                shown = ", ".join(image.name for image in uncaptioned[:SHOWN])
                raise ValueError(f"{len(uncaptioned)} of {len(images)} image(s) in {layout.images_folder} have no "
                                 f"caption in the captions file: {shown}; caption every image (python -m "
                                 "salient_outpaint.data.captions), or give no captions file to train without text")
            caption_lists = [captions[image.stem] for image in images]
        super().__init__(layout.pairs(), caption_lists, size, seed)


def read_coco_captions(captions_json: Path) -> tuple[list[dict], dict[int, list[str]]]:
    """COCO caption annotations -> (image entries sorted by file name, image id -> captions)."""
    if not captions_json.is_file():
        raise FileNotFoundError(f"the COCO captions file {captions_json} does not exist")
    try:
        annotations = json.loads(captions_json.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{captions_json} is not a JSON file ({error})") from None
    if not isinstance(annotations, dict) or not {"images", "annotations"} <= set(annotations):
        raise ValueError(f"{captions_json} is not a COCO captions file: it needs \"images\" and \"annotations\" "
                         "lists (use annotations/captions_train2017.json)")
    captions_by_id: dict[int, list[str]] = {}
    for annotation in annotations["annotations"]:
        captions_by_id.setdefault(annotation["image_id"], []).append(annotation["caption"].strip())
    return sorted(annotations["images"], key=lambda entry: entry["file_name"]), captions_by_id


class CocoDataset(PairedDataset):
    """COCO images, their caption annotations (captions_*.json; one of an image's captions is drawn
    per item) and a folder of salient-object masks named <image stem>.png."""

    def __init__(self, images_dir: str | Path, captions_json: str | Path, masks_dir: str | Path, size: int,
                 seed: int = 0):
        captions_json = Path(captions_json)
        entries, captions_by_id = read_coco_captions(captions_json)
        if not entries:
            raise ValueError(f"{captions_json} lists no images")
        images = [Path(images_dir) / entry["file_name"] for entry in entries]
        if not any(image.is_file() for image in images[:SHOWN]):  # the data check lists single absent images
            raise FileNotFoundError(f"the first images listed in {captions_json} are not in {images_dir} "
                                    f"({', '.join(image.name for image in images[:SHOWN])}); is {images_dir} the "
                                    "folder of that split (e.g. train2017 for captions_train2017.json)?")
        uncaptioned = [entry["file_name"] for entry in entries if not captions_by_id.get(entry["id"])]
        if uncaptioned:
            raise ValueError(f"{len(uncaptioned)} image(s) in {captions_json} have no caption annotation: "
                             f"{', '.join(uncaptioned[:SHOWN])}")
        super().__init__(pair_masks(images, Path(masks_dir)), [captions_by_id[entry["id"]] for entry in entries],
                         size, seed)


class MixtureDataset(Dataset):
    """`length` items per epoch, each drawn from dataset k with probability weights[k] / sum(weights),
    at a uniformly drawn index of it.

    A small dataset in a long mixture is drawn many times per epoch; each draw reads it at its own
    epoch (this epoch's draw number), so the repeats get fresh crops, flips and captions instead of
    the same augmentation again."""

    def __init__(self, datasets: list[Dataset], weights: list[float], length: int, seed: int = 0):
        if not datasets:
            raise ValueError("a mixture needs at least one dataset")
        if len(weights) != len(datasets) or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(f"give one positive weight per dataset; got {list(weights)} for {len(datasets)} datasets")
        if length <= 0:
            raise ValueError(f"a mixture's length (items per epoch) must be positive, not {length}")
        empty = [index for index, dataset in enumerate(datasets) if len(dataset) == 0]
        if empty:
            raise ValueError(f"dataset(s) {empty} of the mixture hold no items")
        self.datasets, self.length, self.seed, self.epoch = datasets, length, seed, 0
        self.probabilities = torch.tensor(weights, dtype=torch.float64) / sum(weights)  # (K,)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def problems(self) -> list[str]:
        return [problem for dataset in self.datasets if hasattr(dataset, "problems") for problem in dataset.problems()]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        generator = item_generator(self.seed, self.epoch, index)
        dataset = self.datasets[int(torch.multinomial(self.probabilities, 1, generator=generator))]
        child_index = int(torch.randint(len(dataset), (), generator=generator))
        dataset.set_epoch(self.epoch * self.length + index)  # this draw's own epoch, see the class docstring
        return dataset[child_index]
