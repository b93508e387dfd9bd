"""DPM-Solver++(2M) (Lu et al. 2022): second-order multistep, good images in ~20 steps.

Works in half-log-SNR time lambda = log(alpha / sigma), with alpha = sqrt(a_t), sigma = sqrt(1 - a_t),
and extrapolates the clean-latent predictions x_0 of the last two steps (the "midpoint" form):
    h  = lambda_next - lambda_now,  r = h_previous / h
    D  = x0_now + (x0_now - x0_previous) / (2 r)
    x_next = (sigma_next / sigma_now) x - alpha_next (exp(-h) - 1) D
The first step and the last (which lands on sigma = 0, i.e. returns x_0) are first order.
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .ddim import Denoiser
from .schedule import linspace_timesteps, predicted_clean_and_noise


def dpm_solver_sample(denoise: Denoiser, latents: torch.Tensor, steps: int, alphas_cumprod: torch.Tensor,
                      prediction_type: str = "epsilon", eta: float = 0.0, generator: torch.Generator | None = None,
                      progress: bool = False) -> torch.Tensor:
    """latents: (B, C, h, w) pure noise -> clean latents. Deterministic: eta and generator are unused,
    accepted so that every sampler has the same signature."""
    timesteps = linspace_timesteps(steps, len(alphas_cumprod))
    alphas = [float(alphas_cumprod[t]) for t in timesteps]
    previous_clean, previous_lambda = None, None
    for index, (t, alpha) in enumerate(zip(tqdm(timesteps, desc="DPM-Solver++(2M)", disable=not progress), alphas)):
        model_output = denoise(latents, torch.tensor(t, device=latents.device))
        clean, _ = predicted_clean_and_noise(model_output, latents, alpha, prediction_type)
        if index == len(timesteps) - 1:
            return clean  # the next sigma is 0: the solution is the clean prediction itself
        lambda_now = 0.5 * math.log(alpha / (1 - alpha))
        alpha_next = alphas[index + 1]
        lambda_next = 0.5 * math.log(alpha_next / (1 - alpha_next))
        h = lambda_next - lambda_now
        direction = clean
        if previous_clean is not None:
            r = (lambda_now - previous_lambda) / h
            direction = clean + (clean - previous_clean) / (2 * r)
        sigma_ratio = ((1 - alpha_next) / (1 - alpha)) ** 0.5
        latents = sigma_ratio * latents - alpha_next ** 0.5 * math.expm1(-h) * direction
        previous_clean, previous_lambda = clean, lambda_now
    return latents
