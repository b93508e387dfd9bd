"""Training checkpoints: everything needed to continue a run exactly where it stopped, in files
that cannot run code.

A checkpoint holds the trainable weights (and their EMA), the optimizer, the learning-rate
schedule, the AMP scaler, the step, the RNG states (as tensors) and the run's config (as JSON):
tensors and plain data only, so it loads with `torch.load(weights_only=True)`, which refuses to
unpickle anything else. The data position needs no saving: the batch of step s is a pure function
of (seed, s, rank), see `batches.py`.

    OUT/checkpoint_0000200.pt, OUT/checkpoint_0000400.pt     the newest --keep-checkpoints of them

Each file is written atomically and flushed to the disk (`atomic_write`); resuming takes the newest
one that reads, and says which damaged ones it passed over.
"""
from __future__ import annotations

import pickle
import random
import re
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..files import atomic_write

CHECKPOINT_PATTERN = re.compile(r"checkpoint_(\d+)\.pt")
STATE_KEYS = ("config", "step", "model", "ema", "optimizer", "scheduler", "scaler", "rng")


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / f"checkpoint_{step:07d}.pt"


def checkpoints_in(out_dir: str | Path) -> list[Path]:
    """The run's training checkpoints, newest (highest step) first."""
    out_dir = Path(out_dir)
    found = [(int(match[1]), path) for path in out_dir.iterdir() if (match := CHECKPOINT_PATTERN.fullmatch(path.name))
             ] if out_dir.is_dir() else []
    return [path for _, path in sorted(found, reverse=True)]


def rng_states() -> dict:
    """The global generators' states as tensors and numbers (nothing a weights-only load refuses)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
              "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                         "gauss_next": gauss_next}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(out_dir: str | Path, state: dict, keep: int) -> Path:
    """Write the checkpoint of state["step"], then delete all but the newest `keep`."""
    path = atomic_write(checkpoint_path(out_dir, state["step"]), lambda temporary: torch.save(state, temporary))
    for old in checkpoints_in(out_dir)[keep:]:
        old.unlink()
    return path


def first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or ['(no message)'])[0]}"


class UnsafeCheckpointError(ValueError):
    """A checkpoint that a weights-only load refused: it would have run code."""


def read_training_state(path: Path) -> dict:
    """One checkpoint file; ValueError if it is damaged or not a training checkpoint. A file that holds
    more than tensors and plain data is refused with an UnsafeCheckpointError, without running it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        wanted = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if wanted:
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it holds Python objects besides tensors and plain data (it asks for "
                f"{wanted[1]}), and unpickling them could run any code; train.py never writes such files, so it "
                "was put there by something else: delete it if you do not trust it") from None
        raise ValueError(f"{path} is damaged ({first_line(error)})") from None
    except Exception as error:  # a truncated zip archive, a file cut to zero bytes, ...
        raise ValueError(f"{path} is damaged ({first_line(error)})") from None
    if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
        raise ValueError(f"{path} is not a training checkpoint (it lacks {', '.join(STATE_KEYS)})")
    return state


def load_training_state(out_dir: str | Path, note: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
                        ) -> dict | None:
    """The newest readable checkpoint of the run (None when it has none), calling `note` with one line
    for each damaged one passed over. An unsafe file stops the resume instead of being passed over."""
    paths = checkpoints_in(out_dir)
    damaged = []
    for path in paths:
        try:
            state = read_training_state(path)
        except UnsafeCheckpointError:
            raise
        except ValueError as error:
            damaged.append(str(error))
            continue
        for reason in damaged:
            note(f"note: skipped a damaged checkpoint, resuming from {path.name} instead: {reason}")
        return state
    if damaged:
        raise ValueError(f"none of the {len(paths)} checkpoint(s) in {out_dir} is readable ({'; '.join(damaged)}); "
                         "delete them to start over, or point --out-dir elsewhere")
    return None
