"""The noise schedule SD2 was trained with, and the conversions every sampler needs.

    x_t = sqrt(a_t) * x_0 + sqrt(1 - a_t) * eps          a_t = alphas_cumprod[t]
    v   = sqrt(a_t) * eps - sqrt(1 - a_t) * x_0           (v-prediction, SD2-768)
"""
from __future__ import annotations

from typing import Callable

import torch

from ..config import ScheduleConfig

# What every sampler calls: (x_t (B, C, h, w), t scalar) -> the network's output at t, (B, C, h, w).
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def alphas_cumprod(config: ScheduleConfig) -> torch.Tensor:
    """(T,) float64 cumulative product of (1 - beta_t)."""
    if config.beta_schedule == "scaled_linear":  # linear in sqrt(beta)
        betas = torch.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, config.num_train_timesteps,
                               dtype=torch.float64) ** 2
    elif config.beta_schedule == "linear":
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
    else:
        raise ValueError(f"unknown beta schedule {config.beta_schedule!r}")
    return torch.cumprod(1.0 - betas, dim=0)


def gather(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[timesteps] shaped to broadcast over a (B, C, H, W) batch."""
    picked = values.to(like.device)[timesteps.to(like.device).long()].to(like.dtype)
    return picked.reshape(-1, *([1] * (like.dim() - 1)))


def add_noise(clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
              alphas: torch.Tensor) -> torch.Tensor:
    alpha = gather(alphas, timesteps, clean)
    return alpha.sqrt() * clean + (1 - alpha).sqrt() * noise


def velocity(clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
             alphas: torch.Tensor) -> torch.Tensor:
    alpha = gather(alphas, timesteps, clean)
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * clean


def predicted_clean_and_noise(model_output: torch.Tensor, sample: torch.Tensor, alpha: float,
                              prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's output at cumulative alpha `alpha` -> (x_0, eps)."""
    signal, noise_level = alpha ** 0.5, (1 - alpha) ** 0.5
    if prediction_type == "epsilon":
        noise = model_output
        return (sample - noise_level * noise) / signal, noise
    if prediction_type == "v_prediction":
        return signal * sample - noise_level * model_output, signal * model_output + noise_level * sample
    raise ValueError(f"unknown prediction type {prediction_type!r}; expected epsilon or v_prediction")


def most_steps(num_train_timesteps: int) -> int:
    """The most sampling steps a schedule of T timesteps allows, T - 1: with T, "leading" would start at
    t = T (past the schedule's end) and "linspace" would repeat a timestep (a zero step that DPM-Solver
    divides by). SamplingOptions refuses more (options.py); the spacings below assume it."""
    return num_train_timesteps - 1


def leading_timesteps(steps: int, num_train_timesteps: int, offset: int = 1) -> list[int]:
    """DDIM's spacing for SD ("leading", steps_offset 1): 981, 961, ..., 1 for 50 of 1000."""
    stride = num_train_timesteps // steps
    return [step * stride + offset for step in reversed(range(steps))]


def linspace_timesteps(steps: int, num_train_timesteps: int) -> list[int]:
    """DPM-Solver's spacing: evenly from T-1 down, rounded (999, 949, ..., 50 for 20 of 1000)."""
    points = torch.linspace(0, num_train_timesteps - 1, steps + 1, dtype=torch.float64).round()
    return [int(t) for t in points.flip(0)[:-1]]


def part_way_timesteps(timesteps: list[int], strength: float) -> list[int]:
    """The timesteps of a run that starts part way (img2img), diffusers' choice: of a run's n timesteps, the
    last int(n * strength), at least one (diffusers refuses none). Strength 1 keeps them all; the run
    starts from clean latents noised to the first one kept (add_noise)."""
    kept = max(1, min(int(len(timesteps) * strength), len(timesteps)))
    return timesteps[len(timesteps) - kept:]
