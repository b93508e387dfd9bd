"""Time training steps of a configuration: samples per second and peak memory."""
from __future__ import annotations

import time

from . import distributed
from .config import TrainConfig
from .loop import Trainer, peak_memory_mb


def benchmark(config: TrainConfig, steps: int) -> dict:
    """Run one warm-up step, then time `steps` steps. Nothing is written to disk."""
    trainer = Trainer(config, distributed.single_process())
    trainer.step(0)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        trainer.step(step)
    seconds = time.perf_counter() - start
    return {"preset": config.preset, "stage": config.stage, "resolution": config.resolution,
            "batch_size": trainer.global_batch, "precision": config.precision,
            "gradient_checkpointing": config.gradient_checkpointing, "precomputed_latents": bool(config.latents),
            "seconds_per_step": seconds / steps,
            "samples_per_s": steps * trainer.global_batch / seconds,
            "peak_memory_mb": peak_memory_mb(trainer.process.device)}
