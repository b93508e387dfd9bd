"""A run's output folder: owned by one run at a time, cleared of what killed writes left, read for
the checkpoint to resume from, and written with what the run reports as it goes.

    OUT/run.lock          {"pid": 4242, "host": "gpu-node-3", "since": "2026-11-25 07:50:12", "job": "81734"}
    OUT/log.jsonl         one JSON record per logged step
    OUT/tensorboard/      with --log-to tensorboard: the same scalars and the validation grids

The lock is created whole or not at all (written under a temporary name, then hard-linked to
run.lock, which fails if the name exists), so two runs starting together cannot both win. A lock
left by a run that is gone is taken over with a note: one whose PID is no longer alive on this
host, or one written by an earlier start of this same SLURM job (`job` is $SLURM_JOB_ID; a requeued
job keeps its id, and SLURM runs one start of a job at a time, perhaps on another node). Any other
lock from another host cannot be checked from here, and is refused like a live one. Under torchrun
only rank 0 holds it.

A resumed run first cuts the log and the TensorBoard events back to the step it resumes from, so
no step appears twice.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from .. import distributed
from ..files import atomic_write, remove_temporary_files
from ..inputs import flag
from .config import CHANGEABLE_ON_RESUME, TrainConfig, resume_conflicts
from .state import checkpoints_in, load_training_state

LOCK_NAME = "run.lock"
LOG_NAME = "log.jsonl"
TENSORBOARD_FOLDER = "tensorboard"


def note(line: str) -> None:
    """A line for the person watching (stdout carries the final JSON record)."""
    print(line, file=sys.stderr)


def on_main(process: distributed.Process) -> Callable[[str], None]:
    return note if process.is_main else (lambda line: None)


@contextlib.contextmanager
def run_folder(config: TrainConfig, process: distributed.Process) -> Iterator[dict | None]:
    """Own the output folder for the block (its lock, on the main process), clear what killed writes
    left there, and give the checkpoint to resume from (None: start at step 0). Everything here
    fails before a model is built."""
    out_dir = Path(config.out_dir)
    if config.log_to == "tensorboard":
        require_tensorboard()
    with run_lock(out_dir, note) if process.is_main else contextlib.nullcontext():
        if process.is_main:
            for leftover in remove_temporary_files(out_dir):
                note(f"note: removed {leftover}, left by a write that was killed")
        distributed.barrier()
        yield resume_state(config, process)


def resume_state(config: TrainConfig, process: distributed.Process) -> dict | None:
    """The checkpoint to go on from; ValueError where the folder holds another run."""
    out_dir = Path(config.out_dir)
    if not config.resume:
        if checkpoints_in(out_dir):
            raise ValueError(f"{out_dir} holds checkpoints of an earlier run (newest: {checkpoints_in(out_dir)[0].name}); "
                             "pass --resume to continue it, or give another --out-dir to start a new one")
        return None
    state = load_training_state(out_dir, note=on_main(process))
    if state is None:
        on_main(process)(f"no checkpoint in {out_dir} yet; starting from step 0")
        return None
    conflicts = resume_conflicts(json.loads(state["config"]), config)
    if conflicts:
        raise ValueError(f"cannot resume {out_dir} (step {state['step']}) with other settings: {'; '.join(conflicts)}. "
                         "Pass the old values to continue that run, or give another --out-dir to start a new one "
                         f"(a resumed run may change only {', '.join(flag(name) for name in CHANGEABLE_ON_RESUME)})")
    return state


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


@contextlib.contextmanager
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


def require_tensorboard() -> None:
    """Fail before step 0, in one line, when --log-to tensorboard cannot work."""
    try:
        import tensorboard  # noqa: F401  (an optional extra; torch.utils.tensorboard needs it)
    except ImportError:
        raise ValueError("--log-to tensorboard needs the tensorboard package: pip install "
                         "'salient-outpaint[tensorboard]' (or pip install tensorboard)") from None


def logged_step(line: str) -> int | None:
    """The step of a log line; None for a line a killed run left half-written."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def cut_log(path: Path, step: int) -> None:
    """Keep only the (whole) records of steps up to `step`."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines()
            if logged_step(line) is not None and logged_step(line) <= step]
    atomic_write(path, lambda temporary: Path(temporary).write_text("".join(line + "\n" for line in kept)))


class RunLog:
    """OUT/log.jsonl, and the TensorBoard events beside it, from `start_step` on."""

    def __init__(self, out_dir: str | Path, start_step: int, log_to: str):
        self.path = Path(out_dir) / LOG_NAME
        cut_log(self.path, start_step)
        self.tensorboard = None
        if log_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter  # an optional extra, checked by require_tensorboard

            # purge_step drops events a killed run wrote after its last checkpoint
            self.tensorboard = SummaryWriter(str(Path(out_dir) / TENSORBOARD_FOLDER), purge_step=start_step + 1)

    def record(self, record: dict) -> None:
        with open(self.path, "a") as log:
            log.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step":
                    self.tensorboard.add_scalar(f"train/{key}", value, record["step"])
            self.tensorboard.flush()

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """(3, H, W) in [-1, 1]."""
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, (image.clamp(-1, 1) + 1) / 2, step)
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
