"""Time training steps of a configuration: samples per second and peak memory."""
from __future__ import annotations

import time
from dataclasses import replace

from . import distributed
from .config import TrainConfig
from .loop import Trainer, peak_memory_mb


def benchmark(config: TrainConfig, steps: int) -> dict:
    """Run one warm-up step, then time `steps` steps. Nothing is written to disk."""
    trainer = Trainer(replace(config, steps=steps + 1), distributed.single_process())
    batches = trainer.batches(0)  # read ahead by --num-workers workers, as in training
    trainer.step(0, next(batches))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.step(step, next(batches))
    seconds = time.perf_counter() - start
    return {"preset": config.preset, "stage": config.stage, "resolution": config.resolution,
            "batch_size": trainer.global_batch, "precision": config.precision, "num_workers": config.num_workers,
            "data": " ".join(config.data),
            "gradient_checkpointing": config.gradient_checkpointing, "precomputed_latents": bool(config.latents),
            "seconds_per_step": seconds / steps,
            "samples_per_s": steps * trainer.global_batch / seconds,
            "peak_memory_mb": peak_memory_mb(trainer.process.device)}
