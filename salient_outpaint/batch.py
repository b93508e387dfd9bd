"""Many photos through one loaded model: what sample.py does with a file, a folder or a manifest.

    inputs --(jobs_from_images / jobs_from_manifest)--> jobs: image, mask, prompt, output name
    output folder --(outputs.check_output_folder)--> writable or creatable, before any model loads; no
        planned output may be an input file (planned_outputs, input_files)
    output folder --(plan_batch)--> created, its settings record checked, the jobs to do listed,
        before any model loads
    each image --(data.images.check_pixels)--> refused from its header past --max-pixels, undecoded
    each job's mask: its file, or else the photo's alpha or plain backdrop, or else a segmenter's
        (find_mask), which is written as OUT/<name>_mask.png
    each job --(photo.outpaint_photo, in micro-batches)--> OUT/<name>_<k>.png, each written as soon
        as it exists, then OUT/<name>_grid.png (input | mask | the first images), written last

A job whose grid and images are all there, made with the same settings (OUT/settings.json, see
output_settings.py), is skipped, so a batch that crashed resumes where it stopped. A job that cannot
be read (a damaged file, a mask of another size, a photo too large) or that runs out of memory is
reported in one line and skipped; the rest goes on. Every job draws its noise from the same seed, so
a result does not depend on which other inputs were in the batch, nor on which process made it.

Under torchrun (see distributed.py) rank 0 plans (plan_batch: the folder checked, the jobs to do), then
the jobs to do are dealt by their place in that list, job i to rank i mod WORLD_SIZE (inputs that
differ in size even out over many jobs); every process writes the outputs of its own jobs; at the end
the summaries are gathered into one (combine), which rank 0 prints, and rank 0's progress bar counts
the images of all of them.
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
from .distributed import Process, gather, single_process
from .hires import HiresOptions
from .options import SamplingOptions
from .output_settings import differences, read_record, record_path, write_record
from .photo import outpaint_photo, resize, working_size
from .pipeline import OutpaintPipeline
from .progress import SharedProgress

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


def plan_batch(jobs: list[Job], out: Path, settings: dict, num_images: int, overwrite: bool = False) -> list[int]:
    """The indices of the jobs to do, after the output folder (checked by outputs.check_output_folder)
    is made ready: created, its settings record the same as `settings` (images made otherwise are
    refused, or with --overwrite redone), and written. With --overwrite every job is to do, and the grid
    of each finished one (its mark of being done) is removed first, so that a run stopped midway leaves
    no old image marked done."""
    out.mkdir(parents=True, exist_ok=True)
    done = {index for index, job in enumerate(jobs) if is_done(out, job, num_images)}
    recorded = read_record(out)
    changed = differences(recorded, settings) if done else []
    if changed and not overwrite:
        how = (f"made with other settings ({', '.join(changed)} differ, per {record_path(out)})" if recorded else
               f"but no {record_path(out).name} saying how they were made")
        raise ValueError(f"--out {out} holds images {how}; give another --out, or --overwrite to redo them")
    write_record(out, settings)
    if overwrite:
        for index in sorted(done):
            grid_path(out, jobs[index].name).unlink()
        return list(range(len(jobs)))
    return [index for index in range(len(jobs)) if index not in done]


def combine(summaries: list[Summary], jobs: list[Job]) -> Summary:
    """The summaries of every process as one, in the order of the jobs."""
    order = {job.name: index for index, job in enumerate(jobs)}
    return Summary(images=sum(summary.images for summary in summaries),
                   done=sorted((name for summary in summaries for name in summary.done), key=order.get),
                   skipped=sorted((name for summary in summaries for name in summary.skipped), key=order.get),
                   failed=sorted((failure for summary in summaries for failure in summary.failed),
                                 key=lambda failure: order[failure[0]]))


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


def run_batch(pipeline: OutpaintPipeline, jobs: list[Job], todo: list[int], out: Path, num_images: int,
              batch_size: int, options: SamplingOptions = SamplingOptions(), negative_prompt: str = "",
              seed: int = 0, resolution: int | None = None, raw: bool = False, find_mask: MaskFinder | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, hires: HiresOptions | None = None,
              process: Process = single_process()) -> Summary:
    """This process's share of the jobs `todo` (plan_batch's) into `out`, num_images results each,
    batch_size at a time; returns, on every process, the summary of the whole run (a peer that died:
    distributed.PeerLost). One progress bar for all processes, on rank 0. A mask made by the segmenter
    is written beside the images as <name>_mask.png. `hires`: see photo.outpaint_photo."""
    to_do = set(todo)
    summary = Summary(skipped=[job.name for index, job in enumerate(jobs) if index not in to_do]
                      if process.is_main else [])
    area_side = resolution or pipeline.models.config.image_size
    with SharedProgress(process, total=len(jobs) * num_images, desc="outpaint") as progress:
        progress.update(len(summary.skipped) * num_images)
        for index in todo[process.rank::process.world_size]:
            job = jobs[index]
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
                                            generator, resolution, raw, hires=hires)
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
        summary = combine(gather(process, summary), jobs)  # waits for the slowest process
        progress.update(0)  # the bar at the run's final count
    return summary
