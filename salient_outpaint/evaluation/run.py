"""What evaluate.py does, as functions: read the inputs, (generate,) measure every image, summarise.

A manifest is a JSONL file, one input per line:
    {"id": "0001", "image": "inputs/0001.png", "mask": "inputs/0001_mask.png",
     "prompt": "a bottle on a marble table", "category": "kitchen"}
Paths are relative to the manifest's folder. Generated images of a method live in one folder,
named <id>_<k>.png for the k-th sample of an input.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data.images import load_image, load_mask, save_image
from ..data.synthetic import BACKGROUNDS, ToyWorldDataset, background_signatures, classify_background
from .expansion import object_expansion
from .segmenters import Segmenter

REQUIRED_FIELDS = ("image", "mask", "prompt")


@dataclass(frozen=True)
class EvaluationInput:
    id: str
    image: Path
    mask: Path
    prompt: str
    category: str = "all"


def read_manifest(path: str | Path) -> list[EvaluationInput]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the manifest {path} does not exist")
    inputs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON: {error.msg}") from None
        missing = [field for field in REQUIRED_FIELDS if field not in entry]
        if missing:
            raise ValueError(f"{path} line {number} lacks {', '.join(missing)}; each line needs "
                             f"{', '.join(REQUIRED_FIELDS)} (and optionally id, category)")
        inputs.append(EvaluationInput(id=str(entry.get("id", number)), image=path.parent / entry["image"],
                                      mask=path.parent / entry["mask"], prompt=entry["prompt"],
                                      category=str(entry.get("category", "all"))))
    if not inputs:
        raise ValueError(f"the manifest {path} holds no inputs")
    return inputs


def write_toy_manifest(folder: str | Path, count: int, size: int = 64, seed: int = 0) -> Path:
    """`count` held-out toy scenes as PNGs plus their manifest; the category is the background."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = ToyWorldDataset(count, size=size, seed=seed, split="test")
    lines = []
    for index in range(count):
        scene = scenes[index]
        name = f"{index:04d}"
        save_image(scene["image"], folder / f"{name}.png")
        save_image(scene["mask"].expand(3, -1, -1) * 2 - 1, folder / f"{name}_mask.png")
        lines.append(json.dumps({"id": name, "image": f"{name}.png", "mask": f"{name}_mask.png",
                                 "prompt": scene["caption"], "category": scene["background"]}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def generated_path(folder: Path, input_id: str, sample: int) -> Path:
    return folder / f"{input_id}_{sample}.png"


def generate(pipeline, inputs: list[EvaluationInput], folder: Path, num_images: int, options, seed: int) -> None:
    """Write num_images samples per input; input i uses seed + i, so every method sees the same noise."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, item in enumerate(tqdm(inputs, desc=f"generate {folder.name}")):
        images = pipeline(load_image(item.image), load_mask(item.mask), item.prompt, num_images=num_images,
                          options=options, generator=torch.Generator().manual_seed(seed + index))
        for sample, image in enumerate(images):
            save_image(image, generated_path(folder, item.id, sample))


def generated_samples(folder: Path, item: EvaluationInput) -> list[Path]:
    samples = sorted(folder.glob(f"{item.id}_*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not samples:
        raise FileNotFoundError(f"no generated image for input {item.id!r} in {folder} "
                                f"(expected {generated_path(folder, item.id, 0).name}, ...)")
    return samples


def measure_method(method: str, folder: Path, inputs: list[EvaluationInput], segmenter: Segmenter) -> list[dict]:
    """One record per generated image: object expansion, and for toy scenes whether the painted
    background is the prompted one (the toy world's stand-in for CLIP score)."""
    signatures = None
    records = []
    for item in tqdm(inputs, desc=f"measure {method}"):
        object_mask = load_mask(item.mask)[0] >= 0.5  # (H, W)
        for path in generated_samples(folder, item):
            image = load_image(path)
            if image.shape[-2:] != object_mask.shape:
                raise ValueError(f"{path} is {tuple(image.shape[-2:])} but its input mask is "
                                 f"{tuple(object_mask.shape)}; generated images keep the input's size")
            expansion = object_expansion(object_mask, segmenter.segment(image, object_mask))
            record = {"method": method, "id": item.id, "file": str(path), "category": item.category,
                      "expansion_fraction": expansion.expansion_fraction,
                      "expansion_ratio": expansion.expansion_ratio}
            if item.category in BACKGROUNDS:
                signatures = signatures or background_signatures(size=image.shape[-1])
                record["background_match"] = float(
                    classify_background(image, object_mask.float(), signatures) == item.category)
            records.append(record)
    return records


def load_samples(folder: Path, item: EvaluationInput) -> torch.Tensor:
    return torch.stack([load_image(path) for path in generated_samples(folder, item)])  # (K, 3, H, W)
