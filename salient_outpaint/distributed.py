"""Single process or `torchrun --nproc_per_node=N` (or any launcher that sets RANK, WORLD_SIZE and
LOCAL_RANK): the same code, told apart by the launcher's env vars. Training (training/) all-reduces
gradients; sampling (batch.py, evaluation/) only deals out inputs and gathers what each process did.

    start()                  training: NCCL on GPUs, gloo on CPUs
    start_sharing(--device)  sampling: --device cuda -> cuda:LOCAL_RANK; always gloo, which notices a
                             dead peer at once (NCCL would wait out its timeout)
    on_main(process, work)   rank 0 does `work` (check a folder, write a shared file), every rank gets
                             its result or its ValueError
    gather(process, value)   every rank's value, on every rank; a peer that died -> PeerLost
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from .device import check_device

# How long a sampling process waits at a meeting point (the end of the batch) for the slowest peer.
# A peer that dies is noticed at once (its connections close); this bounds the wait for one that hangs.
SHARING_TIMEOUT = timedelta(hours=2)

Result = TypeVar("Result")


@dataclass(frozen=True)
class Process:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class PeerLost(RuntimeError):
    """Another process of the run died or stopped answering; the message says what to do."""


def peer_lost(process: Process, error: Exception) -> PeerLost:
    """The one line a surviving process ends with, quoting the first sentence of gloo's own
    ("Connection closed by peer [10.0.0.2]:4711"), without its source location."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    reason = re.sub(r"^\[[^\]]*\]\s*", "", first_line).split(". ")[0]
    return PeerLost(f"process {process.rank} of {process.world_size}: another process of the run stopped "
                    f"({reason}); rerun the same command to finish what is missing")


def single_process() -> Process:
    return Process(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def launched() -> bool:
    """Whether a launcher started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_as_main() -> bool:
    """Rank 0 or alone: the process that speaks for the run, known before the process group starts."""
    return int(os.environ.get("RANK", "0")) == 0


def start() -> Process:
    """Join the process group when launched by torchrun (NCCL on GPUs, gloo on CPUs)."""
    if "RANK" not in os.environ:
        return single_process()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return Process(rank, world_size, torch.device("cuda", local_rank))
    dist.init_process_group("gloo")
    return Process(rank, world_size, torch.device("cpu"))


def process_device(name: str, local_rank: int, world_size: int) -> torch.device:
    """The device of one of `world_size` processes for --device `name`: cuda is this machine's GPU
    number LOCAL_RANK; an explicit cuda:N would put every process on one GPU, so it is refused."""
    device = torch.device(name)
    if device.type != "cuda" or world_size == 1:
        return device
    if device.index is not None:
        raise ValueError(f"--device {name} with {world_size} processes would put them all on one GPU; "
                         "give --device cuda (each process takes the GPU of its LOCAL_RANK)")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ValueError(f"--device cuda: this machine has {count} GPUs but a process has LOCAL_RANK "
                         f"{local_rank}; start at most {count} processes per machine (--nproc_per_node)")
    return torch.device("cuda", local_rank)


def start_sharing(device: str) -> Process:
    """Join the process group of a sampling run (gloo, on CPUs and GPUs alike: the processes exchange
    only names and counts), each process on its own device; alone, `device` as given."""
    check_device(device)
    if not launched():
        return Process(0, 1, torch.device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    own_device = process_device(device, local_rank, world_size)
    if own_device.type == "cuda":
        torch.cuda.set_device(own_device)
    dist.init_process_group("gloo", timeout=SHARING_TIMEOUT)
    return Process(rank, world_size, own_device)


def gather(process: Process, value: Result) -> list[Result]:
    """Every rank's `value` (picklable), in rank order, on every rank. A peer that died or hung: PeerLost."""
    if process.world_size == 1:
        return [value]
    values = [None] * process.world_size
    try:
        dist.all_gather_object(values, value)
    except RuntimeError as error:  # gloo: "Connection closed by peer", or the timeout
        raise peer_lost(process, error) from None
    return values


def on_main(process: Process, work: Callable[[], Result]) -> Result:
    """`work()` on rank 0 only; every rank returns its result, or raises the ValueError it raised."""
    outcome = None
    if process.is_main:
        try:
            outcome = ("result", work())
        except (ValueError, FileNotFoundError) as error:  # the other ranks raise it as a ValueError
            outcome = ("error", str(error))
    if process.world_size > 1:
        outcome = gather(process, outcome)[0]
    kind, value = outcome
    if kind == "error":
        raise ValueError(value)
    return value


def shared_counter(process: Process, name: str) -> Callable[[int], int]:
    """add(n) -> the sum of every rank's additions so far: a count all processes keep together, in the
    process group's key-value store (how rank 0's progress bar shows the whole run)."""
    if process.world_size == 1:
        total = [0]

        def add_alone(count: int) -> int:
            total[0] += count
            return total[0]

        return add_alone
    store = dist.distributed_c10d._get_default_store()  # the rendezvous' store, which every rank reaches

    def add(count: int) -> int:
        try:
            return store.add(name, count)
        except RuntimeError as error:  # the store lived in a process (or launcher) that died
            raise peer_lost(process, error) from None

    return add


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
