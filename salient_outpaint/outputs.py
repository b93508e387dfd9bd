"""Where a tool's results go, checked before any work, and how a run that stops early ends: the one
set of rules sample.py, evaluate.py, train.py, make-masks and `shards pack` share.

    check_output_folder(out)              writable or creatable: '', a file, a read-only folder refused
    check_spares_inputs(outputs, inputs)  no planned output is an input file (the input folder as --out)
    ends_in_one_line(work)                Ctrl-C -> one line, exit 130 (finished outputs are kept and a
                                          rerun resumes); a full or read-only disk mid-run -> one line, exit 1

Files themselves are written whole or not at all (files.atomic_write), so a run stopped by either
leaves no half-written output behind.
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .inputs import InputError

INTERRUPTED = 130  # a shell's code for a process ended by SIGINT (128 + 2)
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the disk is read-only",
               errno.EDQUOT: "the disk quota is used up", errno.EACCES: "permission denied",
               errno.EIO: "the disk reported an input/output error"}


def check_output_folder(out: str | Path, flag: str = "--out") -> Path:
    """Prove `out` a folder this process can write, or one it can create, so that a wrong folder fails
    before the work, not after. Nothing is created here: a run that fails its other checks leaves no
    empty folder behind (the first result written creates it)."""
    if str(out).strip() == "":
        raise InputError(f"{flag} is empty; give a folder (it is created if missing)")
    out = Path(out)
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        where = "" if existing == out else f": {existing} is a file"
        raise InputError(f"{flag} {out} is a file{where}; give a folder (it is created if missing)")
    try:
        with tempfile.TemporaryFile(dir=existing):  # a name of its own: torchrun's processes probe at once
            pass
    except OSError as error:
        raise InputError(f"{flag} {out} is not a folder this program can write to ({error.strerror})") from None
    return out


def check_spares_inputs(outputs: Iterable[Path], inputs: Iterable[Path | None], flag: str = "--out") -> None:
    """Refuse, before any work, when a planned output path is an existing input file (the same file,
    links included): the run would overwrite the user's file, and later inputs would be read from
    earlier results."""
    inputs_by_identity = {}
    for path in inputs:
        if path is not None and Path(path).is_file():
            inputs_by_identity[identity(path)] = path
    for output in outputs:
        if output.exists() and identity(output) in inputs_by_identity:
            raise InputError(f"{flag} {output.parent} would overwrite the input {inputs_by_identity[identity(output)]} "
                             f"with a result ({output.name}); give another {flag}")


def identity(path: Path) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def disk_error(error: OSError) -> str | None:
    """One line for an OSError of the disk being written (full, read-only, ...), None for any other."""
    if error.errno not in DISK_ERRORS:
        return None
    where = f" writing {error.filename}" if error.filename else ""
    return f"{DISK_ERRORS[error.errno]}{where}; free space or give another output folder, then rerun to resume"


def ends_in_one_line(work: Callable[[], int]) -> int:
    """Run a command's work; a Ctrl-C or a disk failure ends it in one line instead of a traceback."""
    try:
        return work()
    except KeyboardInterrupt:
        print("\ninterrupted: finished outputs are kept; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    except OSError as error:
        message = disk_error(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1
