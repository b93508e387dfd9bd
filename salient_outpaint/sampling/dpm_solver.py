"""DPM-Solver++(2M) (Lu et al. 2022): second-order multistep, good images in ~20 steps.

Works in half-log-SNR time lambda = log(alpha / sigma), with alpha = sqrt(a_t), sigma = sqrt(1 - a_t),
and extrapolates the clean-latent predictions x_0 of the last two steps (the "midpoint" form):
    h  = lambda_next - lambda_now,  r = h_previous / h
    D  = x0_now + (x0_now - x0_previous) / (2 r)
    x_next = (sigma_next / sigma_now) x - alpha_next (exp(-h) - 1) D
The first step and the last (which lands on sigma = 0, i.e. returns x_0) are first order.
UniPC's predictor is this step (unipc.py imports it).
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .schedule import Denoiser, predicted_clean_and_noise


def dpm_solver_sample(denoise: Denoiser, latents: torch.Tensor, timesteps: list[int], alphas_cumprod: torch.Tensor,
                      prediction_type: str = "epsilon", eta: float = 0.0, generator: torch.Generator | None = None,
                      progress: bool = False) -> torch.Tensor:
    """latents: (B, C, h, w) pure noise -> clean latents, calling the model at `timesteps` (descending).
    Deterministic: eta and generator are unused, accepted so that every sampler has the same signature."""
    alphas = [float(alphas_cumprod[t]) for t in timesteps]
    lambdas = [half_log_snr(alpha) for alpha in alphas]
    previous_clean = None
    for index, t in enumerate(tqdm(timesteps, desc="DPM-Solver++(2M)", disable=not progress)):
        model_output = denoise(latents, torch.tensor(t, device=latents.device))
        clean, _ = predicted_clean_and_noise(model_output, latents, alphas[index], prediction_type)
        if index == len(timesteps) - 1:
            return clean  # the next sigma is 0: the solution is the clean prediction itself
        latents = dpm_solver_step(latents, clean, previous_clean, alphas, lambdas, index)
        previous_clean = clean
    return latents


def half_log_snr(alpha: float) -> float:
    """lambda = log(sqrt(a) / sqrt(1 - a)) at cumulative alpha a."""
    return 0.5 * math.log(alpha / (1 - alpha))


def dpm_solver_step(latents: torch.Tensor, clean: torch.Tensor, previous_clean: torch.Tensor | None,
                    alphas: list[float], lambdas: list[float], index: int) -> torch.Tensor:
    """One DPM-Solver++(2M) step from timestep `index` to `index + 1` of the run (alphas and lambdas per
    timestep): second order given the clean prediction of the step before, else first order."""
    h = lambdas[index + 1] - lambdas[index]
    direction = clean
    if previous_clean is not None:
        r = (lambdas[index] - lambdas[index - 1]) / h
        direction = clean + (clean - previous_clean) / (2 * r)
    return exponential_update(latents, alphas[index], alphas[index + 1], h, direction)


def exponential_update(latents: torch.Tensor, alpha_from: float, alpha_to: float, h: float,
                       direction: torch.Tensor) -> torch.Tensor:
    """x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D: the exact solution for a constant x_0 = D."""
    sigma_ratio = ((1 - alpha_to) / (1 - alpha_from)) ** 0.5
    return sigma_ratio * latents - alpha_to ** 0.5 * math.expm1(-h) * direction
