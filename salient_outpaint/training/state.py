"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the trainable weights (and their EMA), the optimizer, the learning-rate
schedule, the AMP scaler, the step, and the RNG states. The data position needs no saving: the
batch of step s is a pure function of (seed, s), see `sampler.py`. Files are written to a
temporary name and renamed, so a crash never leaves half a checkpoint.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..checkpoints.io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_state(out_dir: str | Path, state: dict) -> Path:
    return atomic_write(Path(out_dir) / CHECKPOINT_NAME, lambda temporary: torch.save(state, temporary))


def load_training_state(out_dir: str | Path) -> dict | None:
    """The run's last checkpoint, or None when it has none yet."""
    path = Path(out_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        # Our own file: it holds numpy RNG state and the config dict, so it is not weights-only.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(f"{path} is not a readable training checkpoint ({error}); "
                         "delete it to start over, or point --out-dir elsewhere") from None
