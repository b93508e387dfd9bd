"""DDIM (Song et al. 2020) as one pure function: no scheduler object, no hidden state.

At each step, with a = alphas_cumprod[t] and a' = alphas_cumprod[t - stride]:
    x_0  = prediction of the clean latents,  eps = the noise it implies
    std  = eta * sqrt((1 - a') / (1 - a) * (1 - a / a'))
    x_t' = sqrt(a') x_0 + sqrt(1 - a' - std^2) eps + std * z
eta = 0 is deterministic; eta = 1 is ancestral (DDPM-like).
"""
from __future__ import annotations

from typing import Callable

import torch
from tqdm import tqdm

from .schedule import leading_timesteps, predicted_clean_and_noise

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t (B, C, h, w), t scalar) -> model output


def ddim_sample(denoise: Denoiser, latents: torch.Tensor, steps: int, alphas_cumprod: torch.Tensor,
                prediction_type: str = "epsilon", eta: float = 0.0, generator: torch.Generator | None = None,
                progress: bool = False) -> torch.Tensor:
    """latents: (B, C, h, w) pure noise -> (B, C, h, w) clean latents."""
    num_train = len(alphas_cumprod)
    timesteps = leading_timesteps(steps, num_train)
    stride = num_train // steps
    for t in tqdm(timesteps, desc="DDIM", disable=not progress):
        model_output = denoise(latents, torch.tensor(t, device=latents.device))
        latents = ddim_step(model_output, latents, t, t - stride, alphas_cumprod, prediction_type, eta, generator)
    return latents


def ddim_step(model_output: torch.Tensor, sample: torch.Tensor, t: int, t_prev: int, alphas_cumprod: torch.Tensor,
              prediction_type: str, eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    alpha = float(alphas_cumprod[t])
    # Past the first training step SD2 uses alphas_cumprod[0], not 1 ("set_alpha_to_one": false).
    alpha_prev = float(alphas_cumprod[max(t_prev, 0)])
    clean, noise = predicted_clean_and_noise(model_output, sample, alpha, prediction_type)
    std = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)) ** 0.5
    previous = alpha_prev ** 0.5 * clean + (1 - alpha_prev - std ** 2) ** 0.5 * noise
    if eta > 0:
        fresh = torch.randn(sample.shape, generator=generator, dtype=sample.dtype,
                            device=generator.device if generator is not None else sample.device)
        previous = previous + std * fresh.to(sample.device)
    return previous
