"""A salient-object folder's captions file, written and checked.

`caption_folder` captions every image of ROOT (its images only, enumerated as training enumerates them,
layouts.py) into the JSONL file that `--data salient:ROOT:CAPTIONS` reads, one line per image:

    {"image": "DUTS-TR-Image/sun_abc.jpg", "caption": "a dog on a sofa"}

the image's path relative to ROOT being the resume key. Each batch is appended as whole lines and
flushed to the disk; a rerun cuts a line torn by a kill, skips the images already in the file and
captions the rest, so that after any kill and a rerun the file parses and holds each image once.
Unreadable images are reported, one line each, and left out (a rerun tries them again).

`missing_captions` is the check training runs before step 0 (datasets.uncaptioned_images), standalone.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ...files import append_lines, cut_torn_line
from ...inputs import flag
from ..datasets import caption_rows, load_captions, uncaptioned_images
from ..images import open_image
from ..layouts import dataset_images

Captioner = Callable[[list[Image.Image]], list[str]]


@dataclass(frozen=True)
class CaptionRun:
    captioned: int  # by this run
    already: int  # found in the file
    unreadable: int


def is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def captioned_images(out: Path) -> set[str]:
    """The images already in the captions file, after cutting a line torn by a kill."""
    if not out.is_file():
        return set()
    if cut_torn_line(out, is_json_object):
        print(f"{out}: removed a last line cut short by an interrupted run", file=sys.stderr)
    return {row.get("image") for _, row in caption_rows(out)} if out.stat().st_size else set()


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"{flag('batch_size')} must be at least 1, not {batch_size}")


def caption_folder(root: str | Path, out: str | Path, captioner: Captioner, batch_size: int,
                   progress: bool = True) -> CaptionRun:
    """Caption the images of ROOT that `out` lacks, `batch_size` at a time, appending to `out`."""
    check_batch_size(batch_size)
    root, out = Path(root), Path(out)
    _, images = dataset_images(root)
    done = captioned_images(out)
    keys = {image: image.relative_to(root).as_posix() for image in images}
    todo = [image for image in images if keys[image] not in done]
    unreadable = 0
    with tqdm(total=len(images), initial=len(images) - len(todo), desc="captions", unit="image",
              disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            readable, pictures = [], []
            for image in todo[start:start + batch_size]:
                try:
                    pictures.append(open_image(image, "image"))
                    readable.append(image)
                except ValueError as error:
                    unreadable += 1
                    tqdm.write(f"skipped: {error}", file=sys.stderr)
            if pictures:
                captions = captioner(pictures)
                append_lines(out, [json.dumps({"image": keys[image], "caption": caption}, ensure_ascii=False)
                                   for image, caption in zip(readable, captions)])
            bar.update(len(todo[start:start + batch_size]))
    return CaptionRun(captioned=len(todo) - unreadable, already=len(images) - len(todo), unreadable=unreadable)


def missing_captions(captions: str | Path, root: str | Path) -> tuple[list[Path], int]:
    """(the images of ROOT without a caption in the captions file, how many images ROOT holds)."""
    _, images = dataset_images(root)
    return uncaptioned_images(images, load_captions(captions)), len(images)
