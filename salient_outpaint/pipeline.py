"""Object photo + object mask + prompt -> new backgrounds around the untouched object.

    image, object mask (binary or soft) --(conditioning.py)--> paint mask, masked image, control image
    prompt, negative prompt --(text.py)--> context (2N, 77, D) for classifier-free guidance
    masked image --(vae.encode)--> masked-image latents;  noise --(sampler + U-Net + ControlNet)--> latents
    latents --(vae.decode)--> images;  optionally paste the original object pixels back
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import conditioning
from .data.masks import binarize, feathered_paste
from .inputs import InputError, check_mask_size
from .modules.models import Models, dtype_of
from .modules.text import Tokenizer, encode_prompts
from .options import SamplingOptions
from .sampling import SAMPLERS
from .sampling.schedule import alphas_cumprod
from .vae_tiling import decode_in_strips


def controlnet_steps(timesteps: list[int], start: float, end: float) -> list[bool]:
    """Whether the ControlNet acts at each of the run's timesteps: at step i of n unless i / n < start or
    (i + 1) / n > end, the rule of the authors' (and diffusers') pipeline. E.g. 10 steps, start 0.2,
    end 0.8: steps 2 to 7."""
    steps = len(timesteps)
    return [not (index / steps < start or (index + 1) / steps > end) for index in range(steps)]


RANGE_SLACK = 0.01


def check_object_mask(object_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(1, H, W) mask in [0, 1], 1 = object, binary or soft -> the same mask as float32; refuses masks
    that leave nothing to do. The object is where the mask is above 0.5 (binarize: what the U-Net keeps)."""
    check_mask_size(object_mask.shape[-2:], image.shape[-2:])
    object_mask = object_mask.float()
    # An antialiased resize overshoots [0, 1] by rounding; values far outside are a mask in another unit.
    if object_mask.min() < -RANGE_SLACK or object_mask.max() > 1 + RANGE_SLACK:
        raise InputError(f"the mask holds values from {float(object_mask.min()):g} to {float(object_mask.max()):g}; "
                         "expected [0, 1] (white = object)")
    object_mask = object_mask.clamp(0, 1)
    kept = binarize(object_mask)
    if not kept.any():
        raise InputError("the mask is empty: it marks no object pixel (white = object; a soft mask counts "
                         "from 0.5)")
    if kept.all():
        raise InputError("the mask covers the whole image: there is no background to paint")
    return object_mask


def pad_to_multiple(tensor: torch.Tensor, multiple: int, value: float) -> torch.Tensor:
    height, width = tensor.shape[-2:]
    return F.pad(tensor, (0, -width % multiple, 0, -height % multiple), value=value)


class OutpaintPipeline:
    def __init__(self, models: Models, device: torch.device | str = "cpu"):
        self.models, self.device = models, torch.device(device)
        for module in models.components().values():
            module.eval().to(self.device)
        self.tokenizer = Tokenizer(models.config.text.context_length)
        self.alphas_cumprod = alphas_cumprod(models.config.schedule)

    def denoiser(self, mask_latent, masked_latents, context, control, options: SamplingOptions,
                 controlled: set[int]):
        """The model the sampler sees: x_t, t -> guided prediction, U-Net steered by the ControlNet.

        The sampler calls it once at each of the run's timesteps, which are distinct, so the steps the
        ControlNet acts on (control_start / control_end) are known by their timesteps, `controlled`;
        at the others it is not run at all, which equals running it at scale 0."""
        unet, controlnet = self.models.unet, self.models.controlnet
        guided = options.guidance > 1.0

        def denoise(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            doubled = torch.cat([latents] * 2) if guided else latents
            unet_input = conditioning.unet_input(doubled, mask_latent, masked_latents)  # (2N, 9, h, w)
            residuals = None
            if controlnet is not None and int(timestep) in controlled:
                dtype = dtype_of(controlnet)
                controlnet_input = conditioning.network_input(unet_input, controlnet.config.in_channels)
                residuals = controlnet(controlnet_input.to(dtype), timestep, context.to(dtype), control.to(dtype),
                                       options.control_scale).to(dtype_of(unet))
            dtype = dtype_of(unet)
            unet_input = conditioning.network_input(unet_input, unet.config.in_channels)
            prediction = unet(unet_input.to(dtype), timestep, context.to(dtype), residuals).float()
            if not guided:
                return prediction
            unconditional, conditional = prediction.chunk(2)
            return unconditional + options.guidance * (conditional - unconditional)

        return denoise

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, object_mask: torch.Tensor, prompt: str, negative_prompt: str = "",
                 num_images: int = 1, options: SamplingOptions = SamplingOptions(),
                 generator: torch.Generator | None = None, latents: torch.Tensor | None = None,
                 progress: bool = False) -> torch.Tensor:
        """image (3, H, W) in [-1, 1], object_mask (1, H, W), 1 = object -> (num_images, 3, H, W) in [-1, 1].

        Random draws, in order: the initial noise (unless `latents` is given), then the sample of the
        masked image's latent posterior; the same order as the reference pipelines."""
        config, vae = self.models.config, self.models.vae
        object_mask = check_object_mask(object_mask, image)
        height, width = image.shape[-2:]
        factor = config.vae.downsample_factor
        # Pad to a multiple of the latent factor; the padding is painted, then cropped away.
        padded_image = pad_to_multiple(image, factor, 0.0)[None].to(self.device)
        padded_mask = pad_to_multiple(object_mask, factor, 0.0)[None].to(self.device)
        paint_mask = conditioning.paint_mask_from_object(padded_mask)  # (1, 1, H', W')
        latent_size = (padded_image.shape[-2] // factor, padded_image.shape[-1] // factor)

        guided = options.guidance > 1.0
        prompts = ([negative_prompt] * num_images if guided else []) + [prompt] * num_images
        context = encode_prompts(self.models.text_encoder, self.tokenizer, prompts)
        if latents is None:
            latents = torch.randn((num_images, config.vae.latent_channels, *latent_size), generator=generator)
        latents = latents.to(self.device)
        scale = config.vae.scaling_factor
        masked_image = conditioning.masked_image(padded_image, paint_mask).to(dtype_of(vae))
        masked_latents = vae.encode(masked_image).sample(generator).float() * scale
        copies = len(prompts)
        mask_latent = conditioning.latent_mask(paint_mask, latent_size).expand(copies, -1, -1, -1)
        masked_latents = masked_latents.expand(copies, -1, -1, -1)
        control = conditioning.control_image(paint_mask, padded_image, config.controlnet.control_image).expand(
            copies, -1, -1, -1)

        sampler = SAMPLERS[options.sampler]
        timesteps = sampler.timesteps(options.steps, len(self.alphas_cumprod))  # the one list the run uses
        window = controlnet_steps(timesteps, options.control_start, options.control_end)
        controlled = {t for t, active in zip(timesteps, window) if active}
        denoise = self.denoiser(mask_latent, masked_latents, context, control, options, controlled)
        latents = sampler.sample(denoise, latents, timesteps, self.alphas_cumprod, config.schedule.prediction_type,
                                 eta=options.eta, generator=generator, progress=progress)
        # In strips: the same image (within 1e-4) for a fraction of the decode's activations (vae_tiling.py).
        images = decode_in_strips(vae, (latents / scale).to(dtype_of(vae))).float().clamp(-1.0, 1.0)[..., :height, :width].cpu()
        # A text-to-image U-Net has no input through which the object's pixels reach it: it draws the
        # object anew (guided by a ControlNet that sees it), so the original is always pasted back.
        if options.paste_back or not config.unet.inpainting:  # the object as the U-Net kept it: the binarised mask
            kept_object = binarize(object_mask)
            images = feathered_paste(images, image[None].cpu(), kept_object[None].cpu(), options.feather)
        return images
