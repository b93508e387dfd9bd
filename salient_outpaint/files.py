"""Files written whole or not at all: every file the package writes for later reading (checkpoints,
exported weights, logs, latents, shards, images) goes through `atomic_write`.

    write OUT/name<random>.tmp  ->  flush it to the disk  ->  rename it onto OUT/name  ->  flush OUT

A crash, or a power cut, leaves either the old file or the new one, never half of one. A process
killed mid-write leaves its `*.tmp` behind (no `finally` runs on SIGKILL); `remove_temporary_files`
clears those when the next run starts in the folder.

A file that grows record by record (the captioner's JSONL) is appended to instead: `append_lines` writes
whole lines and flushes them to the disk, so a kill leaves at most its last line torn, and
`cut_torn_line` removes that line when the next run starts.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(temporary_path)`, flush it to the disk, then rename it onto `path` and flush the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=TEMPORARY_SUFFIX)
    os.close(handle)
    try:
        write(temporary)
        fsync(temporary)
        os.replace(temporary, path)
        fsync(path.parent)  # the rename itself is an entry of the folder
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def fsync(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data from the page cache to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the leftovers of atomic writes killed midway anywhere under `folder` (only safe while
    no other process writes there); returns what was deleted."""
    leftovers = sorted(Path(folder).rglob(f"*{TEMPORARY_SUFFIX}")) if Path(folder).is_dir() else []
    for leftover in leftovers:
        leftover.unlink()
    return leftovers


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append `lines` (each without its newline) to a text file in one write, then flush it to the disk."""
    with open(path, "a", encoding="utf-8") as file:
        file.write("".join(f"{line}\n" for line in lines))
        file.flush()
        os.fsync(file.fileno())


def cut_torn_line(path: str | Path, is_whole: Callable[[bytes], bool]) -> bool:
    """Remove the last line of a file if it has no newline and `is_whole(line)` says it was cut short (a kill
    during `append_lines`); a whole last line only gets its newline. Returns whether a line was cut."""
    data = Path(path).read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    start = data.rfind(b"\n") + 1
    whole = is_whole(data[start:])
    with open(path, "r+b") as file:
        if whole:
            file.seek(len(data))
            file.write(b"\n")
        else:
            file.truncate(start)
        file.flush()
        os.fsync(file.fileno())
    return not whole
