"""Samplers: pure functions (denoise, noise latents, steps, alphas_cumprod, prediction_type, ...) -> latents."""
from .ddim import ddim_sample
from .dpm_solver import dpm_solver_sample
from .unipc import unipc_sample

SAMPLERS = {"ddim": ddim_sample, "dpm++2m": dpm_solver_sample, "unipc": unipc_sample}

__all__ = ["SAMPLERS", "ddim_sample", "dpm_solver_sample", "unipc_sample"]
