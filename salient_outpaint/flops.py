"""What one image costs, in floating-point operations: every network call of a run, counted on the
meta device (shapes only: no memory, no arithmetic), so SD2 at 512 x 512 is counted in seconds.

    text encoder  the prompts (negative and positive when guided: 2 rows, else 1)
    VAE encode    the masked image
    denoising     each step as its StepPlan says (pipeline.py): the ControlNet when it acts, whole or
                  its shallowest level; the U-Net whole or cheap; 2 rows while guided, else 1
    VAE decode    the latents

torch.utils.flop_counter counts matrix multiplications and convolutions (2 per multiply-add) and
attention; element-wise work (norms, activations, the sampler's own arithmetic) is left out, as in
the published FLOPs of these networks. On the meta device attention runs as matrix products and is
counted; a real run on a CPU counts it only with the math backend (torch.nn.attention.sdpa_kernel), its
fused kernel being unknown to the counter.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .modules.models import Models
from .options import SamplingOptions
from .pipeline import OutpaintPipeline, step_plans
from .sampling import SAMPLERS
from .sampling.schedule import alphas_cumprod


def counted(function, *args, **kwargs) -> int:
    with FlopCounterMode(display=False) as counter:
        function(*args, **kwargs)
    return counter.get_total_flops()


@torch.no_grad()
def image_flops(models: Models, options: SamplingOptions, height: int = 512, width: int = 512) -> dict[str, int]:
    """FLOPs of one height x width image sampled with `options`, per part (keys as in the docstring above,
    "text", "vae_encode", "denoising", "vae_decode") and "total". `models` may live on the meta device
    (models.empty_models); the inputs are made there."""
    config, device = models.config, torch.device("meta")
    factor = config.vae.downsample_factor
    latent_size = (height // factor, width // factor)
    rows = 2 if options.guidance > 1.0 else 1
    parts = {"text": counted(models.text_encoder, torch.zeros(rows, config.text.context_length, dtype=torch.long,
                                                                 device=device)),
             "vae_encode": counted(models.vae.encode, torch.zeros(1, 3, height, width, device=device))}
    context = torch.zeros(rows, config.text.context_length, config.unet.cross_attention_dim, device=device)
    mask_latent = torch.zeros(rows, 1, *latent_size, device=device)
    masked_latents = torch.zeros(rows, config.vae.latent_channels, *latent_size, device=device)
    control = torch.zeros(rows, 3, height, width, device=device)
    timesteps = SAMPLERS[options.sampler].timesteps(options.steps, len(alphas_cumprod(config.schedule)))
    pipeline = OutpaintPipeline.__new__(OutpaintPipeline)  # the denoiser alone: no tokenizer, nothing moved
    pipeline.models = models
    denoise = pipeline.denoiser(mask_latent, masked_latents, context, control, options,
                                step_plans(timesteps, options))
    latents = torch.zeros(1, config.vae.latent_channels, *latent_size, device=device)
    parts["denoising"] = sum(counted(denoise, latents, torch.tensor(t)) for t in timesteps)
    parts["vae_decode"] = counted(models.vae.decode, latents)
    parts["total"] = sum(parts.values())
    return parts
