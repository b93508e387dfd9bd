"""The data, checked before step 0: every image and mask is opened, every problem listed at once.

Opening reads only a file's header (its format and size), and `verify` checks what is cheap to
check without decoding (a PNG's chunk checksums), so a large dataset is scanned in minutes, on
threads (the work is mostly waiting for the disk). Caught: missing masks and images, files that are
not images or are cut short in their header, masks of another size than their image. A JPEG
damaged past its header is only found when it is decoded, during training. `--skip-data-check`
skips the scan.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from ..inputs import InputError, check_mask_size
from .images import upright_size

LISTED = 20  # problems named in the error; the rest are counted
THREADS = 16


class DataCheckError(ValueError):
    """Problems found in the data, all of them, counted and (the first LISTED) named."""

    def __init__(self, problems: list[str], checked: str):
        shown = "".join(f"\n  {problem}" for problem in problems[:LISTED])
        more = f"\n  ... and {len(problems) - LISTED} more" if len(problems) > LISTED else ""
        super().__init__(f"the data check found {len(problems)} problem(s) in {checked} before training started "
                         f"(fix them, or pass --skip-data-check to meet them during training):{shown}{more}")


def image_size(path: Path, what: str, problems: list[str]) -> tuple[int, int] | None:
    """(width, height) upright, from the file's header, or None after adding the problem to `problems`."""
    if not path.is_file():
        problems.append(f"{path}: the {what} is missing")
        return None
    try:
        with Image.open(path) as file:
            file.verify()  # must come first on a fresh file, and leaves it unusable
        with Image.open(path) as file:
            size = upright_size(file)
    except Exception as error:  # Pillow raises many types for damaged files
        problems.append(f"{path}: cannot read the {what} ({type(error).__name__}: {error})")
        return None
    return size


def pair_problems(image: Path, mask: Path) -> list[str]:
    problems = []
    image_wh, mask_wh = image_size(image, "image", problems), image_size(mask, "mask", problems)
    if image_wh and mask_wh:
        try:  # (width, height) from the headers -> (height, width)
            check_mask_size(mask_wh[::-1], image_wh[::-1], image=f"its image {image.name}")
        except InputError as error:
            problems.append(f"{mask}: {error}")
    return problems


def pairs_problems(pairs: list[tuple[Path, Path]]) -> list[str]:
    with ThreadPoolExecutor(THREADS) as pool:
        return [problem for problems in pool.map(lambda pair: pair_problems(*pair), pairs) for problem in problems]


def check_data(dataset, specs: tuple[str, ...]) -> bool:
    """Raise DataCheckError listing every problem of the dataset (its `problems()`); returns whether
    there was anything to check (not for datasets without files: the toy world, precomputed latents)."""
    if not hasattr(dataset, "problems"):
        return False
    problems = dataset.problems()
    if problems:
        raise DataCheckError(problems, " ".join(specs))
    return True
