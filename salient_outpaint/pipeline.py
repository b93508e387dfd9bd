"""Object photo + object mask + prompt -> new backgrounds around the untouched object.

    image, object mask --(conditioning.py)--> paint mask, masked image, control image
    prompt, negative prompt --(text.py)--> context (2N, 77, D) for classifier-free guidance
    masked image --(vae.encode)--> masked-image latents;  noise --(sampler + U-Net + ControlNet)--> latents
    latents --(vae.decode)--> images;  optionally paste the original object pixels back
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import conditioning
from .data.masks import feathered_paste
from .modules.models import Models, dtype_of
from .modules.text import Tokenizer, encode_prompts
from .sampling import SAMPLERS
from .sampling.schedule import alphas_cumprod


class InputError(ValueError):
    """Input the pipeline cannot use; the message says what to change."""


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 20
    guidance: float = 7.5  # classifier-free guidance scale; <= 1 turns guidance off
    control_scale: float = 1.0  # 0 reproduces plain SI2
    sampler: str = "dpm++2m"
    eta: float = 0.0  # DDIM only
    paste_back: bool = False  # put the original object pixels back (the VAE round trip is lossy)
    feather: int = 2  # pixels of soft edge for the paste-back


def check_object_mask(object_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """(1, H, W) mask in [0, 1], 1 = object -> binary mask; refuses masks that leave nothing to do."""
    if object_mask.shape[-2:] != image.shape[-2:]:
        raise InputError(f"the mask is {tuple(object_mask.shape[-2:])} (H, W) but the image is "
                         f"{tuple(image.shape[-2:])}; give a mask of the image's size")
    binary = (object_mask >= 0.5).to(image.dtype)
    if not torch.equal(binary, object_mask.to(image.dtype)):
        warnings.warn("the mask was not binary; it was binarised at 0.5", stacklevel=3)
    if not binary.any():
        raise InputError("the mask is empty: it marks no object pixel (white = object)")
    if binary.all():
        raise InputError("the mask covers the whole image: there is no background to paint")
    return binary


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

    def denoiser(self, mask_latent, masked_latents, context, control, options: SamplingOptions):
        """The model the sampler sees: x_t, t -> guided prediction, U-Net steered by the ControlNet."""
        unet, controlnet = self.models.unet, self.models.controlnet
        guided = options.guidance > 1.0

        def denoise(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            doubled = torch.cat([latents] * 2) if guided else latents
            unet_input = conditioning.unet_input(doubled, mask_latent, masked_latents)  # (2N, 9, h, w)
            residuals = None
            if controlnet is not None:
                dtype = dtype_of(controlnet)
                residuals = controlnet(unet_input.to(dtype), timestep, context.to(dtype), control.to(dtype),
                                       options.control_scale).to(dtype_of(unet))
            dtype = dtype_of(unet)
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
        if options.sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {options.sampler!r}; choose one of {', '.join(SAMPLERS)}")
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
        control = conditioning.control_image(paint_mask).expand(copies, -1, -1, -1)

        denoise = self.denoiser(mask_latent, masked_latents, context, control, options)
        sample = SAMPLERS[options.sampler]
        latents = sample(denoise, latents, options.steps, self.alphas_cumprod, config.schedule.prediction_type,
                         eta=options.eta, generator=generator, progress=progress)
        images = vae.decode((latents / scale).to(dtype_of(vae))).float().clamp(-1.0, 1.0)[..., :height, :width].cpu()
        if options.paste_back:
            images = feathered_paste(images, image[None].cpu(), object_mask[None].cpu(), options.feather)
        return images
