"""The settings record of an output folder: OUT/settings.json says with which options and weights the
images in OUT were made, so that a rerun (with any number of processes) skips an input only when its
images are there and were made alike; images made otherwise are never taken for finished ones.

    settings: a JSON-able dict the caller composes (sampling options, seed, dtype, ...,
              and weights_fingerprint() of every weights file or folder used)
    read_record(OUT) -> the recorded dict, or None      write_record(OUT, settings): atomically
    differences(recorded, settings) -> the top-level keys whose values differ, for the message
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .files import atomic_write

RECORD_NAME = "settings.json"
CHUNK = 1 << 24  # bytes hashed at a time


def weights_fingerprint(path: str | Path) -> str | None:
    """SHA-256 of a weights file, or of every file under a folder (their relative names and contents):
    the same weights under another path or on another node hash alike; retrained weights do not.
    None where nothing is at `path` (loading the weights says so, in its own words)."""
    path = Path(path)
    if not path.exists():
        return None
    files = sorted(file for file in path.rglob("*") if file.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def normalised(settings: dict) -> dict:
    """As JSON reads it back (tuples become lists), so that a fresh dict compares equal to a recorded one."""
    return json.loads(json.dumps(settings, sort_keys=True))


def record_path(out: Path) -> Path:
    return Path(out) / RECORD_NAME


def read_record(out: Path) -> dict | None:
    path = record_path(out)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path} is not a settings record this program wrote; move it away") from None


def write_record(out: Path, settings: dict) -> None:
    text = json.dumps(normalised(settings), indent=1, sort_keys=True) + "\n"
    atomic_write(record_path(out), lambda temporary: Path(temporary).write_text(text))


def differences(recorded: dict | None, settings: dict) -> list[str]:
    """The top-level settings that differ from the record (every one when there is no record)."""
    settings = normalised(settings)
    if recorded is None:
        return sorted(settings)
    return sorted(key for key in settings.keys() | recorded.keys() if recorded.get(key) != settings.get(key))
