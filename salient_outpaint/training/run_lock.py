"""One run per output folder: OUT/run.lock names the process that owns the folder.

    {"pid": 4242, "host": "gpu-node-3", "since": "2026-11-25 07:50:12", "job": "81734"}

The file is created whole or not at all (written under a temporary name, then hard-linked to
run.lock, which fails if the name exists), so two runs starting together cannot both win. A lock
left by a run that is gone is taken over with a note: one whose PID is no longer alive on this
host, or one written by an earlier start of this same SLURM job (`job` is $SLURM_JOB_ID; a requeued
job keeps its id, and SLURM runs one start of a job at a time, perhaps on another node). Any other
lock from another host cannot be checked from here, and is refused like a live one. Under torchrun
only rank 0 holds it.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

LOCK_NAME = "run.lock"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def read_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return owner if isinstance(owner, dict) and {"pid", "host", "since", "job"} <= set(owner) else None


def try_create(path: Path, owner: dict) -> bool:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{LOCK_NAME}.")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(owner, file)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.remove(temporary)


@contextmanager
def run_lock(out_dir: str | Path, note: Callable[[str], None]) -> Iterator[Path]:
    """Hold OUT/run.lock while the block runs; ValueError naming the owner if another run holds it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
          "job": os.environ.get("SLURM_JOB_ID", "")}
    while not try_create(path, me):
        owner = read_owner(path)
        if owner is None:  # unreadable: not written by run_lock, or damaged by hand
            raise ValueError(f"{path} exists but names no run; if no run is using {out_dir}, delete it")
        who = f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
        earlier_start_of_this_job = me["job"] and owner["job"] == me["job"]
        if not earlier_start_of_this_job and (owner["host"] != me["host"] or process_alive(owner["pid"])):
            raise ValueError(f"{out_dir} is in use by another training run ({who}); wait for it, stop it, or give "
                             f"another --out-dir (if that run is gone, delete {path})")
        note(f"note: taking over {path} from a run that is gone ({who})")
        path.unlink(missing_ok=True)
    try:
        yield path
    finally:
        if read_owner(path) == me:
            path.unlink()
