"""Samplers: pure functions (denoise, noise latents, timesteps, alphas_cumprod, prediction_type, ...) -> latents.

As in k-diffusion, a sampler is given the timesteps it calls the model at; it never computes them.
SAMPLERS names each sampler with the spacing its reference scheduler uses, (steps, T) -> [t_0, t_1, ...]:
the one place that decides a sampler's timesteps. The pipeline computes them once and hands the same
list to the sampler and to the ControlNet's window. A run that starts part way (img2img, --hires) takes
the tail of that list (schedule.part_way_timesteps) and starts from latents noised to its first timestep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .ddim import ddim_sample
from .dpm_solver import dpm_solver_sample
from .schedule import leading_timesteps, linspace_timesteps
from .unipc import unipc_sample


@dataclass(frozen=True)
class Sampler:
    sample: Callable[..., torch.Tensor]  # (denoise, latents, timesteps, alphas_cumprod, prediction_type, ...)
    timesteps: Callable[[int, int], list[int]]  # (steps, T) -> the timesteps `sample` is given, descending


SAMPLERS = {"ddim": Sampler(ddim_sample, leading_timesteps),
            "dpm++2m": Sampler(dpm_solver_sample, linspace_timesteps),
            "unipc": Sampler(unipc_sample, linspace_timesteps)}

__all__ = ["SAMPLERS", "Sampler", "ddim_sample", "dpm_solver_sample", "unipc_sample"]
