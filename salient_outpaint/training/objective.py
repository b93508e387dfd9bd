"""The loss of each training stage, as one module so that DDP can wrap it whole.

Only the stage's trainable networks have `requires_grad`; DDP synchronises just those.
Every random draw of a sample comes from that sample's own generator, in a fixed order
(mask, then posterior noise, then timestep, then diffusion noise), so a batch's loss is a pure
function of its positions in the data stream.

A batch is a dict: "image" (B, 3, H, W), "mask" (B, 1, H, W) object masks, "caption" (B strings).
A batch from precomputed latents (latent_cache.py) has the VAE posteriors of the ControlNet stage
instead of "image" (see `vae_posteriors`); the posterior noise is drawn here either way, so both
give the same loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import conditioning
from ..data.masks import dilate, erode, random_inpainting_mask
from ..modules.models import Models, dtype_of
from ..modules.text import Tokenizer
from ..sampling.schedule import add_noise, alphas_cumprod, velocity
from .config import AUTOENCODER_STAGES


def per_sample_randn(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=generator) for generator in generators])


def per_sample_uniform(generators: list[torch.Generator]) -> torch.Tensor:
    return torch.stack([torch.rand((), generator=generator) for generator in generators])


CAPTIONS_KEPT = 256  # 77 x 1024 fp32 each at SD2 size: 80 MB
TEXTURE_WINDOW = 8  # px: the windows of texture_loss, overlapping by half


def local_gradient_energy(images: torch.Tensor, window: int = TEXTURE_WINDOW) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, h, w): the mean squared difference of neighbouring pixels (right and
    below, over channels) in each window, the windows overlapping by half."""
    across = F.pad((images[..., :, 1:] - images[..., :, :-1]) ** 2, (0, 1, 0, 0))
    down = F.pad((images[..., 1:, :] - images[..., :-1, :]) ** 2, (0, 0, 0, 1))
    return F.avg_pool2d((across + down).mean(1, keepdim=True), window, window // 2)


def texture_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """How far each window's gradient energy (as a root mean square) is from the image's. Where the
    latents do not pin down where a texture's grains are (grass, sand, stars at a few pixels), L1 and L2
    are least for a blur; this term asks for as much texture as the image has, wherever it is."""
    def rms(x):
        return local_gradient_energy(x).add(1e-6).sqrt()

    return (rms(reconstruction) - rms(images)).abs().mean()


class TrainingObjective(nn.Module):
    """(batch, one generator per sample) -> the stage's loss; `prediction_type` is "epsilon" or
    "v_prediction", what the U-Net is trained to predict."""

    def __init__(self, models: Models, stage: str, prediction_type: str, empty_prompt_probability: float,
                 kl_weight: float, texture_weight: float = 0.0, captions_kept: int = CAPTIONS_KEPT):
        super().__init__()
        self.stage, self.prediction_type = stage, prediction_type
        self.kl_weight, self.texture_weight = kl_weight, texture_weight
        self.empty_prompt_probability, self.captions_kept = empty_prompt_probability, captions_kept
        self.config = models.config
        self.networks = nn.ModuleDict(models.components())
        self.tokenizer = Tokenizer(models.config.text.context_length)
        self.register_buffer("alphas_cumprod", alphas_cumprod(models.config.schedule).float(), persistent=False)
        # frozen text encoder: the first `captions_kept` captions met (all of a precomputed cache's) are
        # encoded once, the others at each use
        self.text_cache: dict[str, torch.Tensor] = {}

    def forward(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        if self.stage in AUTOENCODER_STAGES:
            return self.vae_loss(batch["image"], generators)
        return self.diffusion_loss(batch, generators)

    def vae_loss(self, images, generators):
        """Reconstruction (L1 + L2), the texture term if weighted, and (vae stage; the decoder stage's
        encoder is frozen) a small KL term. SD's VAE had perceptual and GAN terms where the toy world has
        the texture term."""
        posterior = self.networks["vae"].encode(images)
        noise = per_sample_randn(generators, tuple(posterior.mean.shape[1:])).to(images.device)
        reconstruction = self.networks["vae"].decode(posterior.mean + posterior.std * noise)
        loss = F.l1_loss(reconstruction, images) + F.mse_loss(reconstruction, images)
        if self.texture_weight:
            loss = loss + self.texture_weight * texture_loss(reconstruction, images)
        if self.stage == "vae":
            loss = loss + self.kl_weight * posterior.kl().mean()
        return loss

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        encoder = self.networks["text_encoder"]
        device = encoder.token_embedding.weight.device
        if any(p.requires_grad for p in encoder.parameters()):
            return encoder(self.tokenizer(captions).to(device))
        with torch.no_grad():
            # One caption per call: an embedding must not depend on which captions shared its batch
            # (batched matmuls round by batch size), or a resumed run, which meets captions in another
            # order, would drift from an uninterrupted one.
            encoded = {caption: encoder(self.tokenizer([caption]).to(device))[0]
                       for caption in sorted(set(captions) - set(self.text_cache))}
        for caption, embedding in encoded.items():  # kept up to a bound: a real dataset's captions are many
            if len(self.text_cache) < self.captions_kept:
                self.text_cache[caption] = embedding
        return torch.stack([self.text_cache.get(caption, encoded.get(caption)) for caption in captions])

    def paint_masks(self, object_masks, generators):
        """ControlNet stage: paint exactly the background (the paper). U-Net stage: the masks SD
        inpainting was trained with (random strokes and boxes, sometimes everything), plus masks
        that hide the object with some of its surroundings, and masks that paint the background
        of a slightly *shrunk* object. The last two stand in for what SI2 met in its data: mask
        edges that do not follow object edges. From them the U-Net learns that the object may go
        on past the mask's edge: the habit that grows objects when outpainting, which the
        ControlNet is then trained to stop."""
        if self.stage == "controlnet":
            return conditioning.paint_mask_from_object(object_masks)
        height, width = object_masks.shape[-2:]
        masks = []
        for object_mask, generator in zip(object_masks, generators):
            choice = float(torch.rand((), generator=generator))
            if choice < 0.2:  # the object and some of its surroundings
                masks.append(dilate(object_mask, 4))
            elif choice < 0.3:
                masks.append(torch.ones_like(object_mask))
            elif choice < 0.5:  # the background of a shrunk object
                pixels = int(torch.randint(1, 5, (), generator=generator))
                masks.append(conditioning.paint_mask_from_object(erode(object_mask, pixels)))
            else:
                masks.append(random_inpainting_mask(height, width, generator).to(object_mask).reshape_as(object_mask))
        return torch.stack(masks)

    @torch.no_grad()
    def vae_posteriors(self, images: torch.Tensor, paint_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean and std, each (B, 4, H/8, W/8), of the frozen VAE's posteriors of the images and of
        the masked images: all the VAE gives a diffusion loss, and what precomputed latents store."""
        vae = self.networks["vae"]
        image_posterior = vae.encode(images.to(dtype_of(vae)))
        masked_posterior = vae.encode(conditioning.masked_image(images, paint_mask).to(dtype_of(vae)))
        return {"image_mean": image_posterior.mean, "image_std": image_posterior.std,
                "masked_mean": masked_posterior.mean, "masked_std": masked_posterior.std}

    def diffusion_loss(self, batch: dict, generators: list[torch.Generator]) -> torch.Tensor:
        object_masks = batch["mask"]
        device = object_masks.device
        paint_mask = self.paint_masks(object_masks.cpu(), generators).to(device)
        keep_prompt = per_sample_uniform(generators) >= self.empty_prompt_probability
        captions = [caption if keep else "" for caption, keep in zip(batch["caption"], keep_prompt.tolist())]
        posteriors = batch if "image_mean" in batch else self.vae_posteriors(batch["image"], paint_mask)
        latent_shape = tuple(posteriors["image_mean"].shape[1:])
        scale = self.config.vae.scaling_factor
        latents = (posteriors["image_mean"] + posteriors["image_std"] * per_sample_randn(
            generators, latent_shape).to(device)) * scale
        masked_latents = (posteriors["masked_mean"] + posteriors["masked_std"] * per_sample_randn(
            generators, latent_shape).to(device)) * scale
        timesteps = torch.stack([torch.randint(0, len(self.alphas_cumprod), (), generator=g)
                                 for g in generators]).to(device)
        noise = per_sample_randn(generators, latent_shape).to(device)
        latents, masked_latents = latents.float(), masked_latents.float()
        noisy = add_noise(latents, noise, timesteps, self.alphas_cumprod)
        unet_input = conditioning.unet_input(noisy, conditioning.latent_mask(paint_mask, latent_shape[-2:]),
                                             masked_latents)  # (B, 9, h, w)
        context = self.encode_text(captions)
        unet = self.networks["unet"]
        unet_dtype = dtype_of(unet)
        control = None
        if self.stage == "controlnet":
            controlnet = self.networks["controlnet"]
            control_image = conditioning.control_image(paint_mask, batch.get("image"),
                                                       self.config.controlnet.control_image)
            control = controlnet(conditioning.network_input(unet_input, controlnet.config.in_channels), timesteps,
                                 context, control_image).to(unet_dtype)
        unet_input = conditioning.network_input(unet_input, unet.config.in_channels)
        prediction = unet(unet_input.to(unet_dtype), timesteps, context.to(unet_dtype), control).float()
        target = (noise if self.prediction_type == "epsilon"
                  else velocity(latents, noise, timesteps, self.alphas_cumprod))
        return F.mse_loss(prediction, target)
