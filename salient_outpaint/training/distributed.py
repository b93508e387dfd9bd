"""Single process or `torchrun --nproc_per_node=N`: the same code, told apart by torchrun's env vars."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def single_process() -> Process:
    return Process(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


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


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
