"""UniPC (Zhao et al. 2023): a multistep predictor plus a corrector that reuses each model call twice.

As DPM-Solver++, in half-log-SNR time lambda = log(alpha / sigma), alpha = sqrt(a_t), sigma = sqrt(1 - a_t),
on the clean-latent predictions m = x_0 ("predict_x0"). Every update from time s to time t has one form:
    h = lambda_t - lambda_s,   x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) D
and the methods differ only in the direction D, built from m_s and its neighbours:
  predictor UniP-2  D = m_s + (m_s - m_r) / (2 r),  r = (lambda_s - lambda_r) / h,  m_r the step before
                    (with the "bh2" B(h) = exp(-h) - 1 this is exactly DPM-Solver++(2M): dpm_solver_step)
  corrector UniC    once the model has been called at x_t, the step s -> t is redone with m_t as well:
                    order 1  D = m_s + (m_t - m_s) / 2
                    order 2  D = m_s + rho_r (m_r - m_s) / r_c + rho_t (m_t - m_s),  r_c = (lambda_r - lambda_s) / h,
                             with (rho_r, rho_t) solving [[1, 1], [r_c, 1]] rho = (b_1, b_2) (the bh2 weights below)
The model is called on the predictor's x_t; the corrected x_t is where the next predictor step starts.
So UniPC costs one model call per step, like DPM-Solver++. The defaults of diffusers' UniPCMultistepScheduler,
as the authors' notebook uses it: order 2 (order 1 on the first step), "bh2", the last step first order
("lower_order_final") landing on sigma = 0, i.e. returning x_0, at linspace timesteps (given by the caller).
"""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from .dpm_solver import dpm_solver_step, exponential_update, half_log_snr
from .schedule import Denoiser, predicted_clean_and_noise

ORDER = 2


def unipc_sample(denoise: Denoiser, latents: torch.Tensor, timesteps: list[int], alphas_cumprod: torch.Tensor,
                 prediction_type: str = "epsilon", eta: float = 0.0, generator: torch.Generator | None = None,
                 progress: bool = False) -> torch.Tensor:
    """latents: (B, C, h, w) pure noise -> clean latents, calling the model at `timesteps` (descending).
    Deterministic: eta and generator are unused, accepted so that every sampler has the same signature."""
    steps = len(timesteps)
    alphas = [float(alphas_cumprod[t]) for t in timesteps]
    lambdas = [half_log_snr(alpha) for alpha in alphas]
    cleans: list[torch.Tensor] = []  # m_0, m_1, ...: the x_0 prediction at each timestep so far
    step_start, previous_order = latents, 0  # where the last predictor step began, and its order
    for index, t in enumerate(tqdm(timesteps, desc="UniPC", disable=not progress)):
        model_output = denoise(latents, torch.tensor(t, device=latents.device))
        clean, _ = predicted_clean_and_noise(model_output, latents, alphas[index], prediction_type)
        if index == steps - 1:
            return clean  # the last step is first order to sigma = 0: its result is x_0 itself
        if index > 0:  # UniC: redo the step that led here, now that the model has seen where it landed
            direction = corrector_direction(cleans, clean, lambdas[:index + 1], previous_order)
            latents = exponential_update(step_start, alphas[index - 1], alphas[index],
                                         lambdas[index] - lambdas[index - 1], direction)
        cleans.append(clean)
        order = min(ORDER, index + 1, steps - index)  # first step: no history; last step: lower order
        step_start, previous_order = latents, order
        # UniP: UniP-2 with bh2 is DPM-Solver++(2M)'s step, UniP-1 its first-order step
        latents = dpm_solver_step(latents, clean, cleans[-2] if order == 2 else None, alphas, lambdas, index)
    return latents


def corrector_direction(cleans: list[torch.Tensor], clean_now: torch.Tensor, lambdas: list[float],
                        order: int) -> torch.Tensor:
    """D for UniC of `order` over the last step, lambdas[-2] -> lambdas[-1]; cleans ends at that step's start."""
    h = lambdas[-1] - lambdas[-2]
    clean_start = cleans[-1]
    if order == 1:
        return clean_start + 0.5 * (clean_now - clean_start)
    r = (lambdas[-3] - lambdas[-2]) / h  # negative: the step before lies at lower lambda (more noise)
    b_1, b_2 = bh2_weights(h)
    rho_before = (b_1 - b_2) / (1 - r)
    rho_now = b_1 - rho_before
    return clean_start + rho_before * (cleans[-2] - clean_start) / r + rho_now * (clean_now - clean_start)


def bh2_weights(h: float) -> tuple[float, float]:
    """UniC's order conditions, right-hand side: b_1 = hh phi_2(hh) / B, b_2 = 2 hh phi_3(hh) / B, in the x_0
    form hh = -h, with B = exp(hh) - 1 ("bh2") and phi_1 = (exp(hh) - 1) / hh, phi_{k+1} = (phi_k - 1 / k!) / hh."""
    hh = -h
    b_of_h = math.expm1(hh)
    h_phi_2 = math.expm1(hh) / hh - 1  # hh phi_2(hh)
    h_phi_3 = h_phi_2 / hh - 0.5  # hh phi_3(hh)
    return h_phi_2 / b_of_h, 2 * h_phi_3 / b_of_h
