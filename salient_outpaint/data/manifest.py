"""Input manifests: a JSONL file, one input per line, read by evaluate.py and sample.py --inputs.

    {"id": "0001", "image": "0001.png", "mask": "0001_mask.png",
     "prompt": "a bottle on a marble table", "category": "kitchen"}

`image`, `mask` (white = object) and `prompt` are required; paths are relative to the manifest's
folder. `id` (default: the line number) names the outputs, `<id>_<k>.png`. `category` (e.g. the
COCO supercategory; default "all") groups the evaluation report. Toy scenes also carry
`background`, the toy background the prompt asks for, which enables the toy world's
prompt-following measure.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .synthetic import BACKGROUNDS

REQUIRED_FIELDS = ("image", "mask", "prompt")


@dataclass(frozen=True)
class ManifestInput:
    id: str
    image: Path
    mask: Path
    prompt: str
    category: str = "all"
    background: str | None = None  # toy scenes: the background the prompt asks for


def read_manifest(path: str | Path) -> list[ManifestInput]:
    """Every input of a manifest, checked: fields present, ids unique, image and mask files there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the manifest {path} does not exist")
    inputs, lines_of_ids = [], {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line} is not UTF-8 text (byte {error.object[error.start]:#x}); save the "
                         "manifest as UTF-8") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where} is not JSON: {error.msg}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is not a JSON object; each line is one {{\"image\": ..., \"mask\": ..., "
                             f"\"prompt\": ...}}")
        missing = [field for field in REQUIRED_FIELDS if field not in entry]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}; each line needs "
                             f"{', '.join(REQUIRED_FIELDS)} (and optionally id, category)")
        for field in ("image", "mask"):
            if not isinstance(entry[field], str) or not entry[field]:
                raise ValueError(f"{where}: {field} must be a file path (a string), not {json.dumps(entry[field])}")
        if not isinstance(entry["prompt"], str):
            raise ValueError(f"{where}: prompt must be text (a string), not {json.dumps(entry['prompt'])}")
        item = ManifestInput(id=str(entry.get("id", number)), image=path.parent / entry["image"],
                               mask=path.parent / entry["mask"], prompt=str(entry["prompt"]),
                               category=str(entry.get("category", "all")), background=entry.get("background"))
        if not re.fullmatch(r"[\w.\-]+", item.id) or item.id.startswith("."):
            raise ValueError(f"{where}: the id {item.id!r} names files, so it may hold only letters, digits, "
                             f"'_', '-' and '.', and may not start with '.' (a hidden file)")
        if item.id in lines_of_ids:
            raise ValueError(f"{where} repeats the id {item.id!r} of line {lines_of_ids[item.id]}; ids must be unique")
        if item.background is not None and item.background not in BACKGROUNDS:
            raise ValueError(f"{where}: background {item.background!r} is not a toy background "
                             f"({', '.join(BACKGROUNDS)})")
        for field in ("image", "mask"):
            file = getattr(item, field)
            if file.exists() and not file.is_file():
                raise ValueError(f"{where}: the {field} {file} is not a file (a folder or a device)")
            if not file.is_file():
                raise FileNotFoundError(f"{where}: the {field} {file} does not exist")
        lines_of_ids[item.id] = number
        inputs.append(item)
    if not inputs:
        raise ValueError(f"the manifest {path} holds no inputs")
    return inputs
