"""Convert a run's checkpoint from the format of older versions (one OUT/checkpoint.pt whose RNG
states are numpy and Python objects, and whose config is a pickled dict) into the current one
(OUT/checkpoint_<step>.pt, tensors and plain data only), so the run can go on with --resume.

    python -m salient_outpaint.training.upgrade OUT

Reading the old file means unpickling it without the weights-only guard, which could run code
hidden in it: run this only on checkpoints you made yourself or otherwise trust. The old file is
kept, renamed OUT/checkpoint.pt.old.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .state import LEGACY_CHECKPOINT, checkpoint_path, read_training_state

USAGE = "python -m salient_outpaint.training.upgrade OUT"


def upgrade(out_dir: str | Path) -> Path:
    """Write OUT/checkpoint_<step>.pt from OUT/checkpoint.pt (trusted) and rename the old file."""
    out_dir = Path(out_dir)
    legacy = out_dir / LEGACY_CHECKPOINT
    if not legacy.is_file():
        raise ValueError(f"{out_dir} has no {LEGACY_CHECKPOINT} to upgrade")
    try:
        old = torch.load(legacy, map_location="cpu", weights_only=False)
        names = {field.name for field in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{key: value for key, value in old["config"].items() if key in names})
        _, keys, position, has_gauss, cached_gaussian = old["rng"]["numpy"]
        version, python_state, gauss_next = old["rng"]["python"]
    except Exception as error:  # not a checkpoint of an older train.py
        raise ValueError(f"{legacy} is not a checkpoint of an older train.py ({type(error).__name__}: {error})") from None
    rng = {"torch": old["rng"]["torch"],
           "numpy": {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "position": int(position),
                     "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
           "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64),
                      "gauss_next": gauss_next}}
    path = checkpoint_path(out_dir, old["step"])
    torch.save({**old, "config": config.to_json(), "rng": rng}, path)
    read_training_state(path)  # what --resume will read: tensors and plain data only
    legacy.rename(legacy.with_name(LEGACY_CHECKPOINT + ".old"))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="the run's folder (train.py's --out-dir), holding checkpoint.pt")
    args = parser.parse_args(argv)
    try:
        path = upgrade(args.out_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}; continue the run with train.py --resume and the same --out-dir")
    return 0


if __name__ == "__main__":
    sys.exit(main())
