"""The training loop: build, load, freeze, then step; the same code on one process or many.

    models = build + --init checkpoints;  trainable = the stage's networks, the rest frozen
    for step in range(start, steps):
        for each micro-batch (positions fixed by (seed, step, rank), see sampler.py; items are
                              images, or their precomputed latents, see latent_cache.py):
            loss = objective(batch) / accumulation; backward   (DDP syncs on the last one)
        clip, AdamW step, LR schedule, EMA; log; checkpoint atomically every N steps;
        a grid of validation images every M steps
"""
from __future__ import annotations

import contextlib
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoints import load_checkpoint, save_checkpoint
from ..config import PRESETS
from ..data.specs import build_dataset
from ..precision import resolve_dtype
from ..modules.models import Models, build_network, compile_models, empty_models
from . import distributed
from .config import TrainConfig, frozen_dtype
from .latent_cache import open_latent_cache, precompute_latents
from .objective import TrainingObjective
from .sampler import batch_positions, item_at, sample_generator
from .state import load_training_state, restore_rng_states, rng_states, save_training_state
from .validation import save_validation_grid

TRAINABLE = {"vae": ("vae",), "unet": ("unet", "text_encoder"), "controlnet": ("controlnet",)}


def prepare_models(config: TrainConfig, device: torch.device) -> Models:
    """The stage's networks, each loaded in place in its final dtype (the trained ones fp32, the frozen
    ones --frozen-dtype); those no --init checkpoint holds start random, a ControlNet as a copy of the
    loaded U-Net."""
    torch.manual_seed(config.seed)  # the same initial weights on every process
    dtypes = {name: torch.float32 if name in TRAINABLE[config.stage] else frozen_dtype(config, device)
              for name in ("vae", "unet", "text_encoder", "controlnet")}
    models = empty_models(PRESETS[config.preset], with_controlnet=config.stage == "controlnet")
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


def collate(dataset, positions, seed: int, device: torch.device) -> dict:
    """The items at these stream positions as one batch: tensors stacked, captions listed."""
    items = []
    for position in positions:
        epoch, index = item_at(position, len(dataset), seed)
        dataset.set_epoch(epoch)
        items.append(dataset[index])
    return {key: torch.stack([item[key] for item in items]).to(device) if isinstance(items[0][key], torch.Tensor)
            else [item[key] for item in items] for key in items[0]}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Trainer:
    """Everything a run holds, and one optimizer step."""

    def __init__(self, config: TrainConfig, process: distributed.Process):
        self.config, self.process = config, process
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
        self.dataset = build_dataset(config.data, config.data_weights, config.resolution, config.seed)
        self.global_batch = config.batch_size * process.world_size * config.grad_accumulation
        self.training_items = self.dataset  # what batches are read from: images, or their precomputed latents
        if config.latents:
            self.training_items = open_latent_cache(self, config.latents)

    def step(self, step: int) -> float:
        """One optimizer step over this process's share of the global batch; returns the local loss."""
        config, process = self.config, self.process
        step_loss = 0.0
        for micro_step in range(config.grad_accumulation):
            positions = batch_positions(step, micro_step, process.rank, process.world_size, config.batch_size,
                                        config.grad_accumulation)
            batch = collate(self.training_items, positions, config.seed, process.device)
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
        return {"config": self.config.to_dict(), "step": step, "ema": self.ema, "rng": rng_states(),
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
            save_training_state(self.config.out_dir, self.state(step))
            self.export_weights()
        distributed.barrier()


def train(config: TrainConfig) -> dict:
    """Run (or resume) a training run; returns the last logged record."""
    process = distributed.start()
    try:
        return run(Trainer(config, process))
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


def run(trainer: Trainer) -> dict:
    config, process = trainer.config, trainer.process
    out_dir = Path(config.out_dir)
    start_step = 0
    state = load_training_state(out_dir) if config.resume else None
    if state is not None:
        start_step = trainer.restore(state)
    elif config.resume and process.is_main:
        print(f"no checkpoint in {out_dir} yet; starting from step 0")
    if process.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    record, window_loss, window_steps, window_start = {}, 0.0, 0, time.perf_counter()
    progress = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps,
                    desc=f"train {config.stage}", disable=not process.is_main)
    for step in progress:
        window_loss += trainer.step(step)
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
                with open(out_dir / "log.jsonl", "a") as log:
                    log.write(json.dumps(record) + "\n")
                progress.set_postfix(loss=f"{record['loss']:.4f}", samples_per_s=f"{record['samples_per_s']:.1f}")
            window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
        if done % config.checkpoint_every == 0 or done == config.steps:
            trainer.save(done)
        if config.validate_every and done % config.validate_every == 0:
            if process.is_main:
                save_validation_grid(trainer.models, config.stage, trainer.dataset, process.device, config.seed,
                                     out_dir, done)
            distributed.barrier()
    return record
