"""The training loop: own the output folder, check, build, load, freeze, then step; the same code on
one process or many.

    lock OUT, clear killed writes' *.tmp, read the newest checkpoint, compare its config (run_folder.py)
    dataset, checked up front (data/check.py); networks = build + --init; trained = the stage's networks
    for step in range(start, steps):
        for each micro-batch (read ahead by DataLoader workers, fixed by (seed, step, rank); items are
                              images, or their precomputed latents):
            loss = objective(batch) / accumulation; backward   (DDP syncs on the last one)
        clip, AdamW step, LR schedule, EMA; log; checkpoint atomically every N steps, keeping K (state.py);
        a grid of validation images every M steps (validation.py)

One step's data path: batches.py (which items, stacked into a batch) -> `Trainer.step` here (to the
device, one generator per sample, backward, optimizer) -> objective.py (the loss).
"""
from __future__ import annotations

import contextlib
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import distributed
from ..checkpoints import load_checkpoint, save_checkpoint
from ..data.check import check_data
from ..data.specs import build_dataset
from ..modules.models import Models, build_network, compile_models, empty_models
from ..precision import resolve_dtype
from . import latent_cache
from .batches import batch_positions, sample_generator, step_batches
from .config import TrainConfig, frozen_dtype
from .objective import CAPTIONS_KEPT, TrainingObjective
from .run_folder import RunLog, note, run_folder
from .state import restore_rng_states, rng_states, save_training_state
from .validation import dataset_items, save_validation_grid, user_items, validation_grid

TRAINABLE = {"vae": ("vae",), "decoder": ("vae",), "unet": ("unet", "text_encoder"), "controlnet": ("controlnet",)}
# parts of a trained network that stay frozen: the decoder stage keeps the encoder, so latents keep their meaning
FROZEN_PARTS = {"decoder": {"vae": ("encoder", "quant_conv")}}


def checked_dataset(config: TrainConfig, process: distributed.Process):
    """The --data items; the main process opens every file first and stops on any problem."""
    dataset = build_dataset(config.data, config.data_weights, config.resolution, config.seed)
    if process.is_main and not config.skip_data_check:
        started = time.perf_counter()
        if check_data(dataset, config.data):
            note(f"data check: no problems in {' '.join(config.data)} ({time.perf_counter() - started:.1f} s)")
    distributed.barrier()
    return dataset


def prepare_networks(config: TrainConfig, device: torch.device) -> Models:
    """The stage's networks, each loaded in place in its final dtype (the trained ones fp32, the frozen
    ones --frozen-dtype); those no --init checkpoint holds start random, a ControlNet as a copy of the
    loaded U-Net."""
    torch.manual_seed(config.seed)  # the same initial weights on every process
    dtypes = {name: torch.float32 if name in TRAINABLE[config.stage] else frozen_dtype(config, device)
              for name in ("vae", "unet", "text_encoder", "controlnet")}
    networks = empty_models(config.model_config(), with_controlnet=config.stage == "controlnet")
    for name, module in networks.components().items():
        module.to(dtypes[name])
    loaded = [name for path in config.init for name in load_checkpoint(path, networks, device=device)]
    for name, module in networks.components().items():
        if name not in loaded:
            module = build_network(networks, name, device, dtypes[name])
            setattr(networks, name, module)
        trainable = name in TRAINABLE[config.stage]
        module.requires_grad_(trainable)
        module.train(trainable)
        for part in FROZEN_PARTS.get(config.stage, {}).get(name, ()):
            module.get_submodule(part).requires_grad_(False).eval()
        if hasattr(module, "gradient_checkpointing"):
            module.gradient_checkpointing = config.gradient_checkpointing
    if config.compile:
        compile_models(networks)
    return networks


def adamw_with_warmup(parameters: list[torch.nn.Parameter], config: TrainConfig):
    """AdamW, and its learning rate rising linearly over --warmup-steps, then constant."""
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = config.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
    return optimizer, scheduler


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Trainer:
    """Everything a run holds, and one optimizer step.

        networks            every network of the run (Models): the trained ones fp32, the frozen --frozen-dtype
        trained_networks    the stage's networks that learn, by name (TRAINABLE)
        training_objective  (batch, generators) -> loss (objective.py), with its text-embedding cache
        synced_objective    the same under torchrun wrapped in DDP, whose backward averages the gradients
                            over processes; the objective itself on one process
        training_items      what batches are read from: the dataset, or its precomputed latents
    """

    def __init__(self, config: TrainConfig, process: distributed.Process, captions_kept: int = CAPTIONS_KEPT):
        self.config, self.process = config, process
        self.dataset = checked_dataset(config, process)
        self.validation_items = (user_items(config.validation_image, config.validation_mask,
                                            config.validation_prompt, config.resolution)
                                 if config.validation_image else [])
        self.networks = prepare_networks(config, process.device)
        self.training_objective = TrainingObjective(
            self.networks, stage=config.stage,
            prediction_type=config.objective or self.networks.config.schedule.prediction_type,
            empty_prompt_probability=config.empty_prompt_probability, kl_weight=config.kl_weight,
            texture_weight=config.texture_weight, captions_kept=captions_kept).to(process.device)
        self.synced_objective = (DistributedDataParallel(self.training_objective) if process.world_size > 1
                                 else self.training_objective)
        self.trained_networks = {name: self.networks.components()[name] for name in TRAINABLE[config.stage]}
        self.trained_parameters = [p for module in self.trained_networks.values() for p in module.parameters()
                                   if p.requires_grad]
        self.optimizer, self.scheduler = adamw_with_warmup(self.trained_parameters, config)
        self.scaler = torch.amp.GradScaler(process.device.type, enabled=config.precision == "fp16")
        self.ema = ({name: {k: v.detach().clone() for k, v in module.state_dict().items()}
                     for name, module in self.trained_networks.items()} if config.ema_decay > 0 else None)
        self.autocast = torch.autocast(process.device.type, enabled=config.precision != "fp32",
                                       dtype=resolve_dtype(config.precision, process.device, "--precision"))
        self.global_batch = config.batch_size * process.world_size * config.grad_accumulation
        self.training_items = self.open_latents(config.latents) if config.latents else self.dataset

    def latent_cache_key(self) -> dict:
        return latent_cache.cache_key(self.config, num_items=len(self.dataset),
                                      encoders=[self.networks.vae, self.networks.text_encoder])

    def open_latents(self, directory: str | Path) -> latent_cache.LatentDataset:
        """The precomputed latents in `directory`, checked against this run; their text embeddings go
        into the objective's cache, so the text encoder is never called."""
        items, text_embeddings = latent_cache.open_latent_cache(
            directory, self.latent_cache_key(), samples_read=self.config.steps * self.global_batch,
            device=self.process.device, note=print if self.process.is_main else (lambda line: None))
        self.training_objective.text_cache.update(text_embeddings)
        return items

    def precompute_latents(self, directory: str | Path, epochs: int, shard_size: int = 256) -> dict:
        return latent_cache.precompute_latents(
            directory, epochs, self.dataset, self.latent_cache_key(), self.training_objective, self.autocast,
            batch_size=self.config.batch_size, process=self.process, shard_size=shard_size)

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
            with self.synced_objective.no_sync() if no_sync else contextlib.nullcontext(), self.autocast:
                loss = self.synced_objective(batch, generators)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at step {step}; the last good checkpoint is in {config.out_dir} "
                    "(resume with --resume, perhaps with a lower --learning-rate or --precision fp32)")
            self.scaler.scale(loss / config.grad_accumulation).backward()
            step_loss += loss.item() / config.grad_accumulation
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trained_parameters, config.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for name, module in self.trained_networks.items():
                    for key, value in module.state_dict().items():
                        self.ema[name][key].lerp_(value, 1.0 - config.ema_decay)
        return step_loss

    def state(self, step: int) -> dict:
        return {"config": self.config.to_json(), "step": step, "ema": self.ema, "rng": rng_states(),
                "model": {name: module.state_dict() for name, module in self.trained_networks.items()},
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def restore(self, state: dict) -> int:
        for name, module in self.trained_networks.items():
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
            for name, module in self.trained_networks.items():
                live[name] = {k: v.clone() for k, v in module.state_dict().items()}
                module.load_state_dict(self.ema[name])
        destination = save_checkpoint(self.networks, Path(self.config.out_dir) / "weights", "diffusers",
                                      components=list(self.trained_networks))
        for name, weights in live.items():
            self.trained_networks[name].load_state_dict(weights)
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
        summary = Trainer(replace(config, latents=""), process).precompute_latents(config.latents, epochs)
        return summary if process.is_main else None
    finally:
        distributed.stop()


def benchmark(config: TrainConfig, steps: int, captions_kept: int = CAPTIONS_KEPT) -> dict:
    """Time `steps` training steps after one warm-up step: samples per second and peak memory.
    Nothing is written to disk."""
    trainer = Trainer(replace(config, steps=steps + 1), distributed.single_process(), captions_kept=captions_kept)
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
                    grid = validation_grid(trainer.networks, config.stage, validation_items, process.device,
                                           config.seed)
                    save_validation_grid(grid, out_dir, done)
                    log.image("validation", grid, done)
                distributed.barrier()
    finally:
        if log is not None:
            log.close()
    return record
