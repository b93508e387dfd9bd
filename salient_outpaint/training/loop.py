"""The training loop: own the output folder, check, build, load, freeze, then step; the same code on
one process or many.

    lock OUT (run_lock.py); clear killed writes' *.tmp; read the newest checkpoint and compare its config
    dataset, checked up front (data/check.py); models = build + --init; trainable = the stage's networks
    for step in range(start, steps):
        for each micro-batch (read ahead by DataLoader workers, fixed by (seed, step, rank), see
                              batches.py; items are images, or their precomputed latents):
            loss = objective(batch) / accumulation; backward   (DDP syncs on the last one)
        clip, AdamW step, LR schedule, EMA; log; checkpoint atomically every N steps, keeping K;
        a grid of validation images every M steps
"""
from __future__ import annotations

import contextlib
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoints import load_checkpoint, save_checkpoint
from ..checkpoints.io import remove_temporary_files
from ..data.check import check_data
from ..data.specs import build_dataset
from ..precision import resolve_dtype
from ..modules.models import Models, build_network, compile_models, empty_models
from . import distributed
from .batches import step_batches
from .config import CHANGEABLE_ON_RESUME, TrainConfig, flag, frozen_dtype, resume_conflicts
from .latent_cache import open_latent_cache, precompute_latents
from .objective import TrainingObjective
from .run_lock import run_lock
from .run_log import RunLog, require_tensorboard
from .sampler import batch_positions, sample_generator
from .state import (LEGACY_CHECKPOINT, checkpoints_in, load_training_state, restore_rng_states, rng_states,
                    save_training_state)
from .validation import dataset_items, save_validation_grid, user_items, validation_grid

TRAINABLE = {"vae": ("vae",), "unet": ("unet", "text_encoder"), "controlnet": ("controlnet",)}


def prepare_models(config: TrainConfig, device: torch.device) -> Models:
    """The stage's networks, each loaded in place in its final dtype (the trained ones fp32, the frozen
    ones --frozen-dtype); those no --init checkpoint holds start random, a ControlNet as a copy of the
    loaded U-Net."""
    torch.manual_seed(config.seed)  # the same initial weights on every process
    dtypes = {name: torch.float32 if name in TRAINABLE[config.stage] else frozen_dtype(config, device)
              for name in ("vae", "unet", "text_encoder", "controlnet")}
    models = empty_models(config.model_config(), with_controlnet=config.stage == "controlnet")
    for name, module in models.components().items():
        module.to(dtypes[name])
    loaded = [name for path in config.init for name in load_checkpoint(path, models, device=device)]
    for name, module in models.components().items():
        if name not in loaded:
            module = build_network(models, name, device, dtypes[name])
            setattr(models, name, module)
        trainable = name in TRAINABLE[config.stage]
        module.requires_grad_(trainable)
        module.train(trainable)
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = config.gradient_checkpointing
    if config.compile:
        compile_models(models)
    return models


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Trainer:
    """Everything a run holds, and one optimizer step."""

    def __init__(self, config: TrainConfig, process: distributed.Process):
        self.config, self.process = config, process
        self.dataset = build_dataset(config.data, config.data_weights, config.resolution, config.seed)
        if process.is_main and not config.skip_data_check:
            started = time.perf_counter()
            if check_data(self.dataset, config.data):
                note(f"data check: no problems in {' '.join(config.data)} ({time.perf_counter() - started:.1f} s)")
        distributed.barrier()
        self.validation_items = (user_items(config.validation_image, config.validation_mask,
                                            config.validation_prompt, config.resolution)
                                 if config.validation_image else [])
        self.models = prepare_models(config, process.device)
        objective = TrainingObjective(self.models, config.stage,
                                      config.objective or self.models.config.schedule.prediction_type,
                                      config.empty_prompt_probability, config.kl_weight).to(process.device)
        self.objective = objective
        self.model = DistributedDataParallel(objective) if process.world_size > 1 else objective
        self.trained = {name: self.models.components()[name] for name in TRAINABLE[config.stage]}
        self.parameters = [p for module in self.trained.values() for p in module.parameters()]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        self.scaler = torch.amp.GradScaler(process.device.type, enabled=config.precision == "fp16")
        self.ema = ({name: {k: v.detach().clone() for k, v in module.state_dict().items()}
                     for name, module in self.trained.items()} if config.ema_decay > 0 else None)
        autocast_dtype = resolve_dtype(config.precision, process.device, "--precision")
        self.autocast = torch.autocast(process.device.type, dtype=autocast_dtype, enabled=config.precision != "fp32")
        self.global_batch = config.batch_size * process.world_size * config.grad_accumulation
        self.training_items = self.dataset  # what batches are read from: images, or their precomputed latents
        if config.latents:
            self.training_items = open_latent_cache(self, config.latents)

    def batches(self, start_step: int) -> Iterator[list[dict]]:
        """The micro-batches of each step from start_step on, read ahead by --num-workers workers."""
        return step_batches(self.training_items, self.config, self.process, start_step)

    def step(self, step: int, micro_batches: list[dict]) -> float:
        """One optimizer step over this process's share of the global batch; returns the local loss."""
        config, process = self.config, self.process
        step_loss = 0.0
        for micro_step, batch in enumerate(micro_batches):
            positions = batch_positions(step, micro_step, process.rank, process.world_size, config.batch_size,
                                        config.grad_accumulation)
            batch = {key: value.to(process.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                     for key, value in batch.items()}
            generators = [sample_generator(config.seed, position) for position in positions]
            last_micro_step = micro_step == config.grad_accumulation - 1
            no_sync = process.world_size > 1 and not last_micro_step
            with self.model.no_sync() if no_sync else contextlib.nullcontext(), self.autocast:
                loss = self.model(batch, generators)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at step {step}; the last good checkpoint is in {config.out_dir} "
                    "(resume with --resume, perhaps with a lower --learning-rate or --precision fp32)")
            self.scaler.scale(loss / config.grad_accumulation).backward()
            step_loss += loss.item() / config.grad_accumulation
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.parameters, config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for name, module in self.trained.items():
                    for key, value in module.state_dict().items():
                        self.ema[name][key].lerp_(value, 1.0 - config.ema_decay)
        return step_loss

    def state(self, step: int) -> dict:
        return {"config": self.config.to_json(), "step": step, "ema": self.ema, "rng": rng_states(),
                "model": {name: module.state_dict() for name, module in self.trained.items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def restore(self, state: dict) -> int:
        for name, module in self.trained.items():
            module.load_state_dict(state["model"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.ema = state["ema"]
        restore_rng_states(state["rng"])
        return state["step"]

    def export_weights(self) -> Path:
        """The trained networks (their EMA when kept) as a diffusers folder, `out_dir/weights`,
        which --init and sample.py read."""
        live = {}
        if self.ema:
            for name, module in self.trained.items():
                live[name] = {k: v.clone() for k, v in module.state_dict().items()}
                module.load_state_dict(self.ema[name])
        destination = save_checkpoint(self.models, Path(self.config.out_dir) / "weights", "diffusers",
                                      components=list(self.trained))
        for name, weights in live.items():
            self.trained[name].load_state_dict(weights)
        return destination

    def save(self, step: int) -> None:
        if self.process.is_main:
            save_training_state(self.config.out_dir, self.state(step), self.config.keep_checkpoints)
            self.export_weights()
        distributed.barrier()


def train(config: TrainConfig) -> dict:
    """Run (or resume) a training run; returns the last logged record."""
    process = distributed.start()
    try:
        with run_folder(config, process) as state:
            return run(Trainer(config, process), state)
    finally:
        distributed.stop()


def precompute(config: TrainConfig, epochs: int) -> dict | None:
    """Write `epochs` epochs of precomputed latents into config.latents; returns a summary on the
    main process (None on the others)."""
    if not config.latents:
        raise ValueError("--precompute-latents needs --latents FOLDER: where to write them")
    process = distributed.start()
    try:
        summary = precompute_latents(Trainer(replace(config, latents=""), process), config.latents, epochs)
        return summary if process.is_main else None
    finally:
        distributed.stop()


def note(line: str) -> None:
    """A line for the person watching (stdout carries the final JSON record)."""
    print(line, file=sys.stderr)


def on_main(process: distributed.Process):
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
    out_dir = Path(config.out_dir)
    if (out_dir / LEGACY_CHECKPOINT).is_file() and not checkpoints_in(out_dir):
        raise ValueError(f"{out_dir / LEGACY_CHECKPOINT} is a checkpoint of an older train.py, whose format can hold "
                         "code, so it is not loaded; if you made it yourself, convert it with "
                         f"'python -m salient_outpaint.training.upgrade {out_dir}' and resume, or give another "
                         "--out-dir to start a new run")
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


def run(trainer: Trainer, state: dict | None) -> dict:
    """Train from `state` (None: from step 0) to config.steps; call inside run_folder."""
    config, process = trainer.config, trainer.process
    out_dir = Path(config.out_dir)
    start_step = trainer.restore(state) if state is not None else 0
    log = RunLog(out_dir, start_step, config.log_to) if process.is_main else None
    validation_items = trainer.validation_items or (dataset_items(trainer.dataset) if config.validate_every else [])
    record, window_loss, window_steps, window_start = {}, 0.0, 0, time.perf_counter()
    progress = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps,
                    desc=f"train {config.stage}", disable=not process.is_main)
    try:
        for step, micro_batches in zip(progress, trainer.batches(start_step)):
            window_loss += trainer.step(step, micro_batches)
            window_steps += 1
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                mean_loss = torch.tensor(window_loss / window_steps, device=process.device)
                if process.world_size > 1:
                    torch.distributed.all_reduce(mean_loss)
                    mean_loss /= process.world_size
                record = {"step": done, "loss": mean_loss.item(), "lr": trainer.scheduler.get_last_lr()[0],
                          "samples_per_s": window_steps * trainer.global_batch / (time.perf_counter() - window_start),
                          "peak_memory_mb": peak_memory_mb(process.device)}
                if process.is_main:
                    log.record(record)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", samples_per_s=f"{record['samples_per_s']:.1f}")
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            if done % config.checkpoint_every == 0 or done == config.steps:
                trainer.save(done)
            if config.validate_every and done % config.validate_every == 0:
                if process.is_main:
                    grid = validation_grid(trainer.models, config.stage, validation_items, process.device, config.seed)
                    save_validation_grid(grid, out_dir, done)
                    log.image("validation", grid, done)
                distributed.barrier()
    finally:
        if log is not None:
            log.close()
    return record
