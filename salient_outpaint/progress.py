"""One progress bar for a run of many processes: rank 0 shows it, counting the images every process
has made (kept together in the process group's store, distributed.shared_counter); alone, a plain
tqdm bar."""
from __future__ import annotations

from tqdm import tqdm

from .distributed import Process, shared_counter


class SharedProgress:
    """tqdm's update and set_postfix_str, with update(n) adding this process's n to the run's count."""

    def __init__(self, process: Process, total: int, desc: str, unit: str = "image"):
        self.bar = tqdm(total=total, desc=desc, unit=unit, disable=not process.is_main)
        self.add = shared_counter(process, f"progress/{desc}")

    def update(self, count: int) -> None:
        self.bar.update(self.add(count) - self.bar.n)

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def __enter__(self) -> SharedProgress:
        return self

    def __exit__(self, *exception) -> None:
        self.bar.close()
