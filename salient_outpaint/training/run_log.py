"""What a run reports as it goes: OUT/log.jsonl (one JSON record per logged step), and with
`--log-to tensorboard` the same scalars and the validation grids as TensorBoard events in OUT/tensorboard.

A resumed run first cuts both back to the step it resumes from, so no step appears twice.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..checkpoints.io import atomic_write

LOG_NAME = "log.jsonl"
TENSORBOARD_FOLDER = "tensorboard"


def require_tensorboard() -> None:
    """Fail before step 0, in one line, when --log-to tensorboard cannot work."""
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
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
    def __init__(self, out_dir: str | Path, start_step: int, log_to: str):
        self.path = Path(out_dir) / LOG_NAME
        cut_log(self.path, start_step)
        self.tensorboard = None
        if log_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

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
