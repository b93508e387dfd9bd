"""Many photos through one loaded model: what sample.py does with a file, a folder or a manifest.

    inputs --(jobs_from_images / jobs_from_manifest)--> jobs: image, mask, prompt, output name
    output folder --(outputs.check_output_folder)--> writable or creatable, before any model loads; no
        planned output may be an input file (planned_outputs, input_files)
    each image --(data.images.check_pixels)--> refused from its header past --max-pixels, undecoded
    each job's mask: its file, or else the photo's alpha or plain backdrop, or else a segmenter's
        (find_mask), which is written as OUT/<name>_mask.png
    each job --(photo.outpaint_photo, in micro-batches)--> OUT/<name>_<k>.png, each written as soon
        as it exists, then OUT/<name>_grid.png (input | mask | the first images), written last

A job whose grid and images are all there is skipped, so a batch that crashed resumes where it
stopped. A job that cannot be read (a damaged file, a mask of another size, a photo too large) or
that runs out of memory is reported in one line and skipped; the rest goes on. Every job draws its
noise from the same seed, so a result does not depend on which other inputs were in the batch.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .data.images import (DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, NoMaskInImage, check_pixels, images_in, load_image,
                          load_mask, load_rgba_as_image_and_mask, make_grid, mask_as_image, save_image)
from .data.manifest import read_manifest
from .device import is_out_of_memory
from .options import SamplingOptions
from .photo import outpaint_photo, resize, working_size
from .pipeline import OutpaintPipeline

GRID_IMAGES = 8  # results shown in a grid; more would make it unwieldy, and all are written anyway
MaskFinder = Callable[[torch.Tensor, Path], torch.Tensor]  # (image (3, H, W), its path) -> (1, H, W) in [0, 1]


@dataclass(frozen=True)
class Job:
    name: str  # outputs: <name>_<k>.png, <name>_grid.png
    image: Path
    mask: Path | None  # white = object; None: the image's alpha channel, its plain backdrop, or a segmenter
    prompt: str


@dataclass
class Summary:
    images: int = 0  # written by this run
    done: list[str] = field(default_factory=list)  # jobs finished by this run
    skipped: list[str] = field(default_factory=list)  # jobs an earlier run had finished
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job, why)


def jobs_from_images(image: Path, mask: Path | None, prompt: str) -> list[Job]:
    """--image FILE [--mask FILE], or --image FOLDER [--mask FOLDER]: every image of the folder, its
    mask the file of the same name stem in the mask folder. One prompt for all."""
    if not image.exists():
        raise FileNotFoundError(f"--image {image} does not exist")
    if mask is not None and not mask.exists():
        raise FileNotFoundError(f"--mask {mask} does not exist")
    for flag, path in (("--image", image), ("--mask", mask)):
        if path is not None and not path.is_file() and not path.is_dir():
            raise ValueError(f"{flag} {path} is neither a file nor a folder")
    if image.is_file():
        if mask is not None and mask.is_dir():
            raise ValueError(f"--mask {mask} is a folder but --image {image} is one file; give its mask file")
        return [Job(image.stem, image, mask, prompt)]
    images = images_in(image)
    if not images:
        raise ValueError(f"--image {image} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if mask is not None and not mask.is_dir():
        raise ValueError(f"--image {image} is a folder, so --mask must be a folder of masks named like the images")
    masks = {path.stem: path for path in images_in(mask)} if mask is not None else {}
    jobs = [Job(path.stem, path, masks.get(path.stem, mask / f"{path.stem}.png") if mask else None, prompt)
            for path in images]
    check_unique_names(jobs)
    return jobs


def jobs_from_manifest(path: Path) -> list[Job]:
    """--inputs MANIFEST (the format of data/manifest.py): outputs are named after the ids."""
    return [Job(item.id, item.image, item.mask, item.prompt) for item in read_manifest(path)]


def check_unique_names(jobs: list[Job]) -> None:
    images_of_names = {}
    for job in jobs:
        if job.name in images_of_names:
            raise ValueError(f"{images_of_names[job.name].name} and {job.image.name} would both write "
                             f"{job.name}_0.png; rename one")
        images_of_names[job.name] = job.image


def output_path(out: Path, name: str, index: int) -> Path:
    return out / f"{name}_{index}.png"


def mask_path(out: Path, name: str) -> Path:
    return out / f"{name}_mask.png"


def grid_path(out: Path, name: str) -> Path:
    return out / f"{name}_grid.png"


def planned_outputs(jobs: list[Job], out: Path, num_images: int) -> list[Path]:
    """Every file run_batch may write for `jobs`."""
    return [path for job in jobs for path in (grid_path(out, job.name), mask_path(out, job.name),
                                               *(output_path(out, job.name, index) for index in range(num_images)))]


def input_files(jobs: list[Job]) -> list[Path]:
    return [path for job in jobs for path in (job.image, job.mask) if path is not None]


def is_done(out: Path, job: Job, num_images: int) -> bool:
    paths = [grid_path(out, job.name)] + [output_path(out, job.name, index) for index in range(num_images)]
    return all(path.is_file() for path in paths)


def load_job(job: Job, find_mask: MaskFinder | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(3, H, W) in [-1, 1], (1, H, W) in [0, 1], and whether a segmenter made the mask. Without a mask
    file: the alpha channel, the plain backdrop, or else what `find_mask` finds. A file of more than
    `max_pixels` pixels is refused before it is decoded."""
    for path, what in ((job.image, "image"), (job.mask, "mask")):
        if path is not None and path.is_file():  # a missing file: open_image says so
            check_pixels(path, what, max_pixels)
    if job.mask is not None:
        return load_image(job.image), load_mask(job.mask), False
    try:
        return *load_rgba_as_image_and_mask(job.image), False
    except NoMaskInImage:
        if find_mask is None:
            raise
    image = load_image(job.image)
    return image, find_mask(image, job.image), True


def run_batch(pipeline: OutpaintPipeline, jobs: list[Job], out: Path, num_images: int, batch_size: int,
              options: SamplingOptions = SamplingOptions(), negative_prompt: str = "", seed: int = 0,
              resolution: int | None = None, raw: bool = False, overwrite: bool = False,
              find_mask: MaskFinder | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Summary:
    """Every job's num_images results into `out`, batch_size at a time; one progress bar for all. A mask
    made by the segmenter is written beside them as <name>_mask.png."""
    summary = Summary()
    area_side = resolution or pipeline.models.config.image_size
    with tqdm(total=len(jobs) * num_images, unit="image", desc="outpaint") as progress:
        for job in jobs:
            if not overwrite and is_done(out, job, num_images):
                summary.skipped.append(job.name)
                progress.update(num_images)
                continue
            progress.set_postfix_str(job.image.name)
            written = 0
            try:
                image, mask, segmented = load_job(job, find_mask, max_pixels)
                if segmented:  # not the user's: show which object was taken
                    save_image(mask_as_image(mask), mask_path(out, job.name))
                tile = working_size(*image.shape[-2:], area_side)
                generator = torch.Generator().manual_seed(seed)
                shown = [resize(image, tile, "bicubic").clamp(-1, 1), mask_as_image(resize(mask, tile, "bilinear"))]
                while written < num_images:
                    count = min(batch_size, num_images - written)
                    images = outpaint_photo(pipeline, image, mask, job.prompt, negative_prompt, count, options,
                                            generator, resolution, raw)
                    for generated in images:
                        save_image(generated, output_path(out, job.name, written))
                        if len(shown) < 2 + GRID_IMAGES:
                            shown.append(resize(generated, tile, "bicubic").clamp(-1, 1))
                        written += 1
                    progress.update(count)
                    summary.images += count
            except (FileNotFoundError, ValueError, RuntimeError, MemoryError) as error:  # InputError is a ValueError
                if is_out_of_memory(error):  # this input's size; the next may fit
                    error = "out of memory (lower --batch-size or --resolution, or downscale the photo)"
                elif isinstance(error, (RuntimeError, MemoryError)):
                    raise
                summary.failed.append((job.name, str(error)))
                progress.update(num_images - written)
                tqdm.write(f"error: {job.image}: {error}; skipped", file=sys.stderr)
                continue
            save_image(make_grid(shown, columns=len(shown)), grid_path(out, job.name))
            summary.done.append(job.name)
    return summary
