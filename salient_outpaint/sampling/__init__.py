"""Samplers: pure functions (denoise, noise latents, steps, alphas_cumprod, prediction_type, ...) -> latents.

TIMESTEPS says, for each sampler, the timesteps it calls the model at: (steps, T) -> [t_0, t_1, ...]."""
from .ddim import ddim_sample
from .dpm_solver import dpm_solver_sample
from .schedule import leading_timesteps, linspace_timesteps
from .unipc import unipc_sample

SAMPLERS = {"ddim": ddim_sample, "dpm++2m": dpm_solver_sample, "unipc": unipc_sample}
TIMESTEPS = {"ddim": leading_timesteps, "dpm++2m": linspace_timesteps, "unipc": linspace_timesteps}

__all__ = ["SAMPLERS", "TIMESTEPS", "ddim_sample", "dpm_solver_sample", "unipc_sample"]
