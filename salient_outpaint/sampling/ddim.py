"""DDIM (Song et al. 2020) as one pure function: no scheduler object, no hidden state.

At each step, from timestep t to the next one given, t', with a = alphas_cumprod[t] and a' = alphas_cumprod[t']:
    x_0  = prediction of the clean latents,  eps = the noise it implies
    std  = eta * sqrt((1 - a') / (1 - a) * (1 - a / a'))
    x_t' = sqrt(a') x_0 + sqrt(1 - a' - std^2) eps + std * z
eta = 0 is deterministic; eta = 1 is ancestral (DDPM-like).
"""
from __future__ import annotations

import torch
from tqdm import tqdm

from .schedule import Denoiser, predicted_clean_and_noise


def ddim_sample(denoise: Denoiser, latents: torch.Tensor, timesteps: list[int], alphas_cumprod: torch.Tensor,
                prediction_type: str = "epsilon", eta: float = 0.0, generator: torch.Generator | None = None,
                progress: bool = False) -> torch.Tensor:
    """latents: (B, C, h, w) pure noise -> (B, C, h, w) clean latents, calling the model at `timesteps`
    (descending). Past the last one SD2 steps to alphas_cumprod[0], not to 1 ("set_alpha_to_one": false)."""
    for t, t_next in zip(tqdm(timesteps, desc="DDIM", disable=not progress), [*timesteps[1:], 0]):
        model_output = denoise(latents, torch.tensor(t, device=latents.device))
        latents = ddim_step(model_output, latents, t, t_next, alphas_cumprod, prediction_type, eta, generator)
    return latents


def ddim_step(model_output: torch.Tensor, sample: torch.Tensor, t: int, t_next: int, alphas_cumprod: torch.Tensor,
              prediction_type: str, eta: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    alpha, alpha_next = float(alphas_cumprod[t]), float(alphas_cumprod[t_next])
    clean, noise = predicted_clean_and_noise(model_output, sample, alpha, prediction_type)
    std = eta * ((1 - alpha_next) / (1 - alpha) * (1 - alpha / alpha_next)) ** 0.5
    previous = alpha_next ** 0.5 * clean + (1 - alpha_next - std ** 2) ** 0.5 * noise
    if eta > 0:
        fresh = torch.randn(sample.shape, generator=generator, dtype=sample.dtype,
                            device=generator.device if generator is not None else sample.device)
        previous = previous + std * fresh.to(sample.device)
    return previous
