"""What evaluate.py does, as functions: read the inputs (a manifest, see data/manifest.py), (generate,)
measure every image, summarise.

The generated images of one method live in one folder, named `<id>_<k>.png` for the k-th sample
(k = 0, 1, ...) of an input, at the input's size.
"""
from __future__ import annotations

import json
import pickle
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from .. import distributed
from ..checkpoints.io import CheckpointError
from ..data.images import IMAGE_SUFFIXES, images_in, load_image, load_mask, mask_as_image, save_image
from ..data.manifest import ManifestInput
from ..data.masks import binarize
from ..data.synthetic import ToyWorldDataset, background_signatures, classify_background
from ..distributed import Process, single_process
from ..inputs import InputError
from ..output_settings import differences, read_record, write_record
from ..progress import SharedProgress
from ..segmentation import SegmentPrompt, Segmenter, refine_mask
from .diversity import background_pixel_diversity
from .expansion import object_expansion
from .fid import extract_features, fid_from_features
from .report import markdown_category_table, markdown_table


def write_toy_manifest(folder: str | Path, count: int, size: int = 64, seed: int = 0) -> Path:
    """`count` held-out toy scenes as PNGs plus their manifest. The prompt is the scene's caption; the
    category and the prompted background are the scene's background."""
    if count < 1:
        raise ValueError(f"--toy needs at least 1 scene, got {count}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = ToyWorldDataset(count, size=size, seed=seed, split="test")
    lines = []
    for index in range(count):
        scene = scenes[index]
        name = f"{index:04d}"
        save_image(scene["image"], folder / f"{name}.png")
        save_image(mask_as_image(scene["mask"]), folder / f"{name}_mask.png")
        lines.append(json.dumps({"id": name, "image": f"{name}.png", "mask": f"{name}_mask.png",
                                 "prompt": scene["caption"], "category": scene["background"],
                                 "background": scene["background"]}))
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def generated_path(folder: Path, input_id: str, sample: int) -> Path:
    return folder / f"{input_id}_{sample}.png"


def sample_files(folder: Path, input_id: str) -> list[tuple[int, Path]]:
    """(k, path) of every `<id>_<k>.png` in folder, by k. Exact names only: id "1" does not claim "1_2_0.png"."""
    pattern = re.compile(re.escape(input_id) + r"_(\d+)\.png")
    found = [(int(match.group(1)), path) for path in folder.glob(f"{input_id}_*.png")
             if (match := pattern.fullmatch(path.name))]
    return sorted(found)


def generated_samples(folder: Path, item: ManifestInput) -> list[Path]:
    samples = [path for _, path in sample_files(folder, item.id)]
    if not samples:
        raise FileNotFoundError(f"no generated image for input {item.id!r} in {folder} "
                                f"(expected {generated_path(folder, item.id, 0).name}, ...)")
    return samples


def load_samples(folder: Path, item: ManifestInput) -> torch.Tensor:
    """(K, 3, H, W) in [-1, 1]: every generated image of one input."""
    samples = [load_image(path) for path in generated_samples(folder, item)]
    sizes = {tuple(sample.shape[-2:]) for sample in samples}
    if len(sizes) > 1:
        raise ValueError(f"the images of input {item.id!r} in {folder} differ in size ({sorted(sizes)})")
    return torch.stack(samples)


def plan_generation(inputs: Sequence[ManifestInput], folder: Path, num_images: int, settings: dict) -> list[int]:
    """The indices of the inputs to generate into `folder` (those without all num_images samples), after
    clearing what must not be measured: samples beyond num_images left from an earlier run, and every
    sample when the folder's settings record (output_settings.py) says they were made otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    made_otherwise = bool(differences(read_record(folder), settings))
    for item in inputs:
        for sample, path in sample_files(folder, item.id):
            if made_otherwise or sample >= num_images:
                path.unlink()
    write_record(folder, settings)
    return [index for index, item in enumerate(inputs)
            if not all(generated_path(folder, item.id, sample).is_file() for sample in range(num_images))]


def generate(pipeline, inputs: Sequence[ManifestInput], folder: Path, num_images: int, options, seed: int,
             settings: dict, process: Process = single_process(), skipped: list[str] | None = None) -> None:
    """Write num_images samples per input, skipping the inputs an earlier run made with the same
    `settings` (plan_generation, on rank 0). Under torchrun the inputs to do are dealt out, the i-th to
    rank i mod WORLD_SIZE; input i draws its noise from seed + i whichever process makes it, so every
    method (and every number of processes) sees the same noise. The images are the pipeline's raw
    output at the input's size, as the paper measured them: not photo.outpaint_photo's, whose
    pasted-back object would hide what the model did to it. An input that cannot be used stops the run
    (the first one any process met is raised on every process, after all have finished), or with
    `skipped` is reported there (and in one line, by rank 0) and passed over."""
    todo = distributed.on_main(process, lambda: plan_generation(inputs, folder, num_images, settings))
    refused = []
    with SharedProgress(process, total=len(inputs), desc=f"generate {folder.name}", unit="input") as progress:
        progress.update(len(inputs) - len(todo) if process.is_main else 0)
        for index in todo[process.rank::process.world_size]:
            item = inputs[index]
            try:
                images = pipeline(load_image(item.image), load_mask(item.mask), item.prompt, num_images=num_images,
                                  options=options, generator=torch.Generator().manual_seed(seed + index))
            except (InputError, ValueError) as error:
                refused.append(f"input {item.id!r} ({item.image}, {item.mask}): {error}")
                if skipped is None:
                    break
                progress.update(1)
                continue
            for sample, image in enumerate(images):
                save_image(image, generated_path(folder, item.id, sample))
            progress.update(1)
    refusals = [message for messages in distributed.gather(process, refused) for message in messages]
    if refusals and skipped is None:
        raise ValueError(refusals[0])
    for message in refusals:  # every process knows them (its exit code), rank 0 says them
        if process.is_main:
            skip(skipped, f"{folder.name}: {message}")
        else:
            skipped.append(f"{folder.name}: {message}")


def object_mask_of(item: ManifestInput) -> torch.Tensor:
    object_mask = binarize(load_mask(item.mask)[0]).bool()  # (H, W)
    if not object_mask.any():
        raise ValueError(f"the mask of input {item.id!r}, {item.mask}, is empty (white = object)")
    return object_mask


@torch.no_grad()
def skip(skipped: list[str], message: str) -> None:
    skipped.append(message)
    tqdm.write(f"error: {message}; skipped", file=sys.stderr)


def image_records(method: str, folder: Path, inputs: Sequence[ManifestInput], segmenter: Segmenter,
                  clip_embedder=None, device: str | torch.device = "cpu", lpips=None,
                  skipped: list[str] | None = None) -> list[dict]:
    """One record per generated image of a method:

      expanded_pixels, expansion_fraction,
      expansion_ratio                      object expansion (see expansion.py), always
      background_match                     toy scenes: 1 if the painted background is classified as
                                           the prompted one (the toy world's stand-in for CLIP score)
      background_diversity                 inputs with 2+ samples: how different their backgrounds are
                                           (diversity.py), the input's value on each of its records
      lpips_diversity                      the same with LPIPS (lpips.py), given its network
      clip_score, object_similarity        with a CLIP embedder (see clip_score.py)

    An input whose files cannot be used is raised, or with `skipped` reported there and passed over.
    """
    signatures = None
    records = []
    for item in tqdm(inputs, desc=f"measure {method}"):
        try:
            object_mask = object_mask_of(item)
            paths = generated_samples(folder, item)
            samples = load_samples(folder, item)  # (K, 3, H, W)
            if samples.shape[-2:] != object_mask.shape:
                raise ValueError(f"{paths[0]} is {tuple(samples.shape[-2:])} but the mask of input {item.id!r} is "
                                 f"{tuple(object_mask.shape)}; generated images keep the input's size")
        except (FileNotFoundError, ValueError) as error:
            if skipped is None:
                raise
            skip(skipped, f"{method}: {error}")
            continue
        item_records = []
        for path, image in zip(paths, samples):
            found = segmenter(image, SegmentPrompt(mask=object_mask[None].float()))  # (1, H, W) in [0, 1]
            expansion = object_expansion(object_mask, refine_mask(found)[0].bool())
            record = {"method": method, "id": item.id, "file": str(path), "category": item.category,
                      "expanded_pixels": expansion.expanded_pixels,
                      "expansion_fraction": expansion.expansion_fraction,
                      "expansion_ratio": expansion.expansion_ratio}
            if item.background is not None:
                signatures = signatures or background_signatures(size=image.shape[-1])
                record["background_match"] = float(
                    classify_background(image, object_mask.float(), signatures) == item.background)
            item_records.append(record)
        if len(samples) >= 2:  # diversity is a property of the input's samples together
            diversity = {"background_diversity": background_pixel_diversity(samples, object_mask)}
            if lpips is not None:
                from .lpips import pairwise_diversity  # torchvision loads only when it is used

                diversity["lpips_diversity"] = pairwise_diversity(lpips, samples.to(device))
            for record in item_records:
                record.update(diversity)
        if clip_embedder is not None:
            from .clip_score import clip_score, object_similarity  # open_clip loads only when it is used

            count = len(samples)
            original = load_image(item.image)[None].expand(count, -1, -1, -1).to(device)
            scores = clip_score(clip_embedder, samples.to(device), [item.prompt] * count)
            similarities = object_similarity(clip_embedder, original, samples.to(device),
                                             object_mask[None].expand(count, -1, -1).to(device))
            for record, score, similarity in zip(item_records, scores.tolist(), similarities.tolist()):
                record.update(clip_score=score, object_similarity=similarity)
        records += item_records
    return records


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder of real images {folder} does not exist")
    files = images_in(folder)
    if not files:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def fid_per_method(folders: Mapping[str, Path], inputs: Sequence[ManifestInput], inception,
                   real_images: Sequence[Path], device: str | torch.device = "cpu") -> dict[str, float]:
    """FID of each method's images against the real images (Inception features, see fid.py)."""
    real_batches = (load_image(path)[None] for path in tqdm(real_images, desc="FID real images"))
    real_features = extract_features(real_batches, inception, device)  # (N_real, 2048)
    results = {}
    for method, folder in folders.items():
        batches = (load_samples(folder, item) for item in tqdm(inputs, desc=f"FID {method}"))
        results[method] = fid_from_features(real_features, extract_features(batches, inception, device))
    return results


def check_weight_file(path: str | Path, flag: str, expected: str) -> None:
    """Fail before any long work if a weights file is missing."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{flag}: no file at {path}; pass the path of {expected}")


def load_weights(loader: Callable, path: str | Path, what: str, *args, **kwargs):
    """`loader(*args, **kwargs)`, turning a file that is not the expected weights into a one-line error."""
    try:
        return loader(*args, **kwargs)
    except CheckpointError as error:  # unreadable, or a pickle that needs code: already one line
        raise ValueError(f"cannot load {path} as {what}: {error}") from None
    except (pickle.UnpicklingError, EOFError):
        raise ValueError(f"cannot load {path} as {what}: it is not a PyTorch weights file, or a damaged one") from None
    except RuntimeError as error:  # load_state_dict's missing/unexpected keys, a broken zip archive
        details = " ".join(line.strip() for line in str(error).strip().splitlines()[:2])
        raise ValueError(f"cannot load {path} as {what}; is it the right file? ({details[:200]})") from None


def markdown_report(summary: Mapping, notes: Sequence[str] = (), first: Sequence[tuple[str, str]] = (),
                    last: Sequence[tuple[str, str]] = ()) -> str:
    """report.md: per method, the mean and the median over images; per category, the expansion ratio
    (and for toy scenes, the background match). `first` and `last`: more (title, text) sections, placed
    before and after those (the intervals, the segmenter's self-check)."""
    methods = summary["methods"].values()
    sections = [*first, ("Per method, mean over images", markdown_table(summary, statistic="mean")),
                ("Per method, median over images", markdown_table(summary, statistic="median")),
                ("Expansion ratio per category, mean", markdown_category_table(summary, "expansion_ratio")),
                ("Expansion ratio per category, median",
                 markdown_category_table(summary, "expansion_ratio", statistic="median"))]
    if any("background_match" in method["metrics"] for method in methods):
        sections.append(("Background as prompted per category (toy), mean",
                         markdown_category_table(summary, "background_match")))
    for metric, title in (("background_diversity", "Background diversity (mean per-pixel distance between "
                                                   "samples of an input) per category, mean"),
                          ("lpips_diversity", "LPIPS diversity between samples of an input per category, mean")):
        if any(metric in method["metrics"] for method in methods):
            sections.append((title, markdown_category_table(summary, metric)))
    sections += last
    text = "# Evaluation\n\n" + "".join(f"## {title}\n\n{table}\n\n" for title, table in sections)
    if notes:
        text += "".join(f"- {note}\n" for note in notes)
    return text
