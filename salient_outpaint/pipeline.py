"""Object photo + object mask + prompt -> new backgrounds around the untouched object.

    image, object mask (binary or soft) --(conditioning.py)--> paint mask, masked image, control image
    prompt, negative prompt --(text.py)--> context (2N, 77, D) for classifier-free guidance
    masked image --(vae.encode)--> masked-image latents;  noise --(sampler + U-Net + ControlNet)--> latents
    latents --(vae.decode)--> images;  optionally paste the original object pixels back
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import conditioning, heap
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


def guided_steps(timesteps: list[int], end: float) -> list[bool]:
    """Whether classifier-free guidance acts at each step: at step i of n while (i + 1) / n <= end (the
    ControlNet's end rule); after it, the conditional prediction alone, on half the batch. 1 guides all."""
    steps = len(timesteps)
    return [(index + 1) / steps <= end for index in range(steps)]


def full_steps(timesteps: list[int], interval: int) -> list[bool]:
    """Whether each step calls the networks whole (steps 0, interval, 2 interval, ...); the others are
    cheap steps that reuse the last full step's deep features (UNet.forward). 1: every step is full."""
    return [index % interval == 0 for index in range(len(timesteps))]


@dataclass(frozen=True)
class StepPlan:
    """What the networks compute at one step of a run."""
    controlled: bool  # the ControlNet acts (control_start / control_end)
    guided: bool  # classifier-free guidance: the unconditional branch runs too (guidance_end)
    full: bool  # the whole U-Net and ControlNet, else a cheap step on the cached deep features (cache_interval)


def step_plans(timesteps: list[int], options: SamplingOptions) -> dict[int, StepPlan]:
    """timestep -> its StepPlan; the sampler calls the model once at each of the run's distinct timesteps."""
    columns = zip(controlnet_steps(timesteps, options.control_start, options.control_end),
                  guided_steps(timesteps, options.guidance_end if options.guidance > 1.0 else 0.0),
                  full_steps(timesteps, options.cache_interval))
    return {t: StepPlan(*column) for t, column in zip(timesteps, columns)}


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
                 plans: dict[int, StepPlan]):
        """The model the sampler sees: x_t, t -> guided prediction, U-Net steered by the ControlNet.

        The conditioning tensors hold 2N rows, unconditional then conditional, when guidance is on
        (N otherwise). Each timestep's StepPlan says what runs:
          controlled  the ControlNet; at the others it is not run at all, which equals scale 0
          guided      both halves, combined by the guidance scale; unguided steps run the conditional rows
          full        the whole networks, keeping the U-Net's deep features when later steps reuse them;
                      a cheap step recomputes the shallowest level of the U-Net on those features, and of
                      the ControlNet (its residuals of the shallow skips): it is still steered by the
                      ControlNet, which sees the current latents, while the deep residuals it added at the
                      last full step live on in the deep features
        With reuse_guidance, a guided cheap step runs the conditional rows alone and adds the guidance
        direction (conditional - unconditional) of the last full step: guidance at the cost of no guidance."""
        unet, controlnet = self.models.unet, self.models.controlnet
        caching = options.cache_interval > 1
        # "deep": (B, C_1, h, w) the last full step's deep features; "direction": (N, 4, h, w) its guidance
        cache: dict[str, torch.Tensor] = {}

        def denoise(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            plan = plans[int(timestep)]
            reused = plan.guided and not plan.full and options.reuse_guidance
            doubled = torch.cat([latents] * 2) if plan.guided and not reused else latents
            rows = slice(len(context) - len(doubled), None)  # all rows, or the conditional ones
            unet_input = conditioning.unet_input(doubled, mask_latent[rows], masked_latents[rows])  # (B, 9, h, w)
            step_context = context[rows]
            residuals = None
            if controlnet is not None and plan.controlled:
                dtype = dtype_of(controlnet)
                controlnet_input = conditioning.network_input(unet_input, controlnet.config.in_channels)
                residuals = controlnet(controlnet_input.to(dtype), timestep, step_context.to(dtype),
                                       control[rows].to(dtype), options.control_scale,
                                       shallow=not plan.full).to(dtype_of(unet))
            dtype = dtype_of(unet)
            unet_input = conditioning.network_input(unet_input, unet.config.in_channels).to(dtype)
            if not plan.full:  # guidance only ever stops: the cached rows are these, or 2N whose last N these are
                prediction = unet(unet_input, timestep, step_context.to(dtype), residuals,
                                  deep=cache["deep"][-len(doubled):]).float()
            elif caching:
                prediction, cache["deep"] = unet(unet_input, timestep, step_context.to(dtype), residuals,
                                                 keep_deep=True)
                prediction = prediction.float()
            else:
                prediction = unet(unet_input, timestep, step_context.to(dtype), residuals).float()
            if reused:  # guided = unconditional + g (conditional - unconditional) = conditional + (g - 1) direction
                return prediction + (options.guidance - 1.0) * cache["direction"]
            if not plan.guided:
                return prediction
            unconditional, conditional = prediction.chunk(2)
            if caching and options.reuse_guidance:
                cache["direction"] = conditional - unconditional
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
        denoise = self.denoiser(mask_latent, masked_latents, context, control, options,
                                step_plans(timesteps, options))
        latents = sampler.sample(denoise, latents, timesteps, self.alphas_cumprod, config.schedule.prediction_type,
                                 eta=options.eta, generator=generator, progress=progress)
        heap.trim()  # the denoising loop's freed activations, returned before the decode's own
        # In strips: the same image (within 1e-4) for a fraction of the decode's activations (vae_tiling.py).
        images = decode_in_strips(vae, (latents / scale).to(dtype_of(vae))).float().clamp(-1.0, 1.0)
        images = images[..., :height, :width].cpu()  # (N, 3, H, W)
        # A text-to-image U-Net has no input through which the object's pixels reach it: it draws the
        # object anew (guided by a ControlNet that sees it), so the original is always pasted back.
        if options.paste_back or not config.unet.inpainting:  # the object as the U-Net kept it: the binarised mask
            kept_object = binarize(object_mask)
            images = feathered_paste(images, image[None].cpu(), kept_object[None].cpu(), options.feather)
        return images
