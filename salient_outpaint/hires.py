"""--hires: a background with real detail at the photo's size, not a bicubic upscale of the working size.

After the working-size result (photo.py), at a size toward the photo's (its long side at most
`hires_size`, sides multiples of 8):

    result (N, 3, h, w) --(composite.py: its object the photo's, upscaled)--> init (N, 3, H', W')
    init --(VAE encoder, tiles)--> latents --(noised to hires_strength: the sampler's last
        int(steps * strength) timesteps, schedule.part_way_timesteps)--> x_t
    x_t --(SI2 + ControlNet in overlapping tiles of the model's native size, every step: each tile gets
        its crop of x_t, the mask latent, the masked-image latents and the control image; the tiles'
        predictions are averaged with smooth weights (MultiDiffusion, tiles.py))--> latents
    latents --(VAE decoder, tiles)--> painted (N, 3, H', W')
    painted's background (object filled from around it) + lowpass(init's background - painted's) --> result
    then the full-size composite with the photo's mask.

The tiles are asked for detail, not for a new layout: a tile sees a few native-size windows of an
enlarged picture and repaints them as a picture of that size would look (a sky's gradient restarted in
every tile, a glow where the enlarged object's edge looks like a small object's), so what survives a
resize back to the working size (the lowpass: area down to the working size, bicubic up) is taken from
the working-size result, and only what is finer from the tiles. This is the colour fix of super-
resolution by diffusion (StableSR's wavelet / AdaIN correction) in its plainest form; the object and its
rim are left out of both sides, so neither the photo's object nor the model's rendition of it bleeds
into the background.

A tile with no object in it, or nothing but object, is just another input to the U-Net (the refusals
of empty and full masks are about the whole photo, made before the working-size run). The cost: the
working-size run, then about (H' W' / native^2) x 1.8 tiles x int(steps * strength) steps more, and the
encode and decode of the large image in tiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from . import conditioning
from .composite import background, composite
from .modules.models import dtype_of
from .modules.text import encode_prompts
from .options import OptionError, SamplingOptions
from .pipeline import OutpaintPipeline, step_plans
from .sampling import SAMPLERS
from .sampling.schedule import add_noise, part_way_timesteps
from .tiles import scaled, tiled
from .vae_tiling import decode, encode_tiled


PROMPT = "{prompt}"


@dataclass(frozen=True)
class HiresOptions:
    hires_size: int = 2048  # the long side at most, pixels; a multiple of 8
    hires_strength: float = 0.4  # how far the result is re-noised: (0, 1], 1 = from pure noise
    hires_passes: int = 1  # how many enlargements to get there, each by about the same factor
    hires_prompt: str = PROMPT  # what the tiles are told; PROMPT in it stands for the photo's prompt

    def __post_init__(self):
        size, strength, passes = self.hires_size, self.hires_strength, self.hires_passes
        if not self.hires_prompt.strip():
            raise OptionError(lambda name: f"{name('hires_prompt')} is empty; give a text, {PROMPT} standing for "
                                           f"the photo's prompt (default: {PROMPT})")
        if passes < 1:
            raise OptionError(lambda name: f"{name('hires_passes')} must be at least 1, got {passes}")
        if size < 8 or size % 8:
            raise OptionError(lambda name: f"{name('hires_size')} must be a positive multiple of 8, got {size}")
        if not 0 < strength <= 1:  # also false for NaN
            raise OptionError(lambda name: f"{name('hires_strength')} must be in (0, 1], got {strength:g}")


def add_hires_arguments(parser) -> None:
    """--hires, --hires-size, --hires-strength, --hires-prompt on a command line (sample.py, app.py); ranges:
    HiresOptions."""
    default = HiresOptions()
    group = parser.add_argument_group("detail at the photo's size (--hires)")
    group.add_argument("--hires", action="store_true",
                       help="paint the background again toward the photo's size, in overlapping tiles of the "
                            "model's size: costs about 1.8 x (pixels / model's pixels) x steps x strength more "
                            "U-Net calls than the working-size run (a 2048x1536 result with SD2: ~20 tiles a "
                            "step), and the large image's encode and decode (default: off, bicubic upscale)")
    group.add_argument("--hires-size", type=int, default=default.hires_size,
                       help=f"the long side of the --hires result at most, a multiple of 8; the photo's own "
                            f"size if smaller (default: {default.hires_size})")
    group.add_argument("--hires-strength", type=float, default=default.hires_strength,
                       help=f"how much of the upscaled result --hires paints again, in (0, 1]: the last "
                            f"steps x strength of the sampler's steps (default: {default.hires_strength})")
    group.add_argument("--hires-prompt", default=default.hires_prompt, metavar="TEXT",
                       help=f"what the tiles are told, {PROMPT} standing for the photo's prompt: a tile of a "
                            f"large photo is a close-up, and a model that learnt close-ups from their captions "
                            f"draws their detail when told so, e.g. 'a close-up of {PROMPT}' (default: {PROMPT}, "
                            f"the prompt itself)")


def hires_options(args) -> HiresOptions | None:
    """The options of the flags, checked (OptionError) even without --hires: a bad value is a mistake."""
    options = HiresOptions(hires_size=args.hires_size, hires_strength=args.hires_strength,
                           hires_prompt=args.hires_prompt)
    return options if args.hires else None


def hires_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(H', W'): the photo's (height, width), shrunk so that the long side is at most `long_side`, sides
    rounded to multiples of 8."""
    scale = min(1.0, long_side / max(height, width))
    return max(8, round(height * scale / 8) * 8), max(8, round(width * scale / 8) * 8)


def pass_sizes(working: tuple[int, int], larger: tuple[int, int], passes: int) -> list[tuple[int, int]]:
    """The sizes the passes paint at: from `working` (h, w) to `larger` (H', W') by equal factors, sides
    multiples of 8, each larger than the one before, the last `larger`; [] if `larger` is not larger."""
    sizes, previous = [], working
    for k in range(1, passes + 1):
        factor = (larger[0] * larger[1] / (working[0] * working[1])) ** (k / passes / 2)
        size = larger if k == passes else hires_size(working[0] * factor, working[1] * factor, math.inf)
        if size[0] * size[1] > previous[0] * previous[1]:
            sizes.append(size)
            previous = size
    return sizes


@torch.no_grad()
def refine(pipeline: OutpaintPipeline, generated: torch.Tensor, working_mask: torch.Tensor, image: torch.Tensor,
           object_mask: torch.Tensor, prompt: str, negative_prompt: str, options: SamplingOptions,
           hires: HiresOptions, size: tuple[int, int], generator: torch.Generator | None = None,
           progress: bool = False) -> torch.Tensor:
    """generated (N, 3, h, w) at the working size with its mask (1, h, w); the photo (3, H, W) and its mask
    (1, H, W) shrunk to `size` (H', W') by the caller -> (N, 3, H', W') in [-1, 1]."""
    init = composite(generated, working_mask, image, object_mask, options.feather)  # (N, 3, H', W')
    painted = repaint(pipeline, init, image, object_mask, hires.hires_prompt.replace(PROMPT, prompt),
                      negative_prompt, options, hires.hires_strength, generator, progress)
    return keep_layout(painted, background(generated, working_mask, size), object_mask, generated.shape[-2:])


@torch.no_grad()
def repaint(pipeline: OutpaintPipeline, init: torch.Tensor, image: torch.Tensor, object_mask: torch.Tensor,
            prompt: str, negative_prompt: str, options: SamplingOptions, strength: float,
            generator: torch.Generator | None = None, progress: bool = False) -> torch.Tensor:
    """The tiles' img2img: init (N, 3, H', W') re-noised to `strength` and denoised by SI2 + ControlNet in
    overlapping native-size tiles, conditioned on the photo (3, H', W') and its mask (1, H', W')
    -> (N, 3, H', W') in [-1, 1], layout not yet restored (keep_layout)."""
    models, device = pipeline.models, pipeline.device
    config, vae = models.config, models.vae
    factor, scale = config.vae.downsample_factor, config.vae.scaling_factor
    native = config.image_size // factor  # a tile: the latent size the networks were trained at
    overlap = native // 4
    num_images = init.shape[0]
    paint_mask = conditioning.paint_mask_from_object(object_mask[None]).to(device)  # (1, 1, H', W')
    photo = image[None].to(device)
    latent_height, latent_width = init.shape[-2] // factor, init.shape[-1] // factor
    latents = encode_tiled(vae, init.to(device, dtype_of(vae)), native).float() * scale  # (N, 4, H'/f, W'/f)
    masked_latents = encode_tiled(vae, conditioning.masked_image(photo, paint_mask).to(dtype_of(vae)),
                                  native).float() * scale  # (1, 4, H'/f, W'/f)
    mask_latent = conditioning.latent_mask(paint_mask, (latent_height, latent_width))  # (1, 1, H'/f, W'/f)
    control = conditioning.control_image(paint_mask, photo, config.controlnet.control_image)  # (1, 3, H', W')

    guided = options.guidance > 1.0
    prompts = ([negative_prompt] * num_images if guided else []) + [prompt] * num_images
    context = encode_prompts(models.text_encoder, pipeline.tokenizer, prompts)
    copies = len(prompts)
    sampler = SAMPLERS[options.sampler]
    timesteps = part_way_timesteps(sampler.timesteps(options.steps, len(pipeline.alphas_cumprod)), strength)
    # The ControlNet's window and guidance's end over the part-way run, as diffusers; every step whole: a
    # tile's denoiser is made anew at each step, so there are no deep features of a last step to reuse.
    plans = step_plans(timesteps, replace(options, cache_interval=1))
    noise = torch.randn(latents.shape, generator=generator).to(device)
    latents = add_noise(latents, noise, torch.tensor(timesteps[:1]), pipeline.alphas_cumprod)

    def denoise(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        def tile(rows: slice, columns: slice) -> torch.Tensor:  # -> (N, 4, tile, tile)
            pixels = (scaled(rows, factor), scaled(columns, factor))
            denoiser = pipeline.denoiser(mask_latent[..., rows, columns].expand(copies, -1, -1, -1),
                                         masked_latents[..., rows, columns].expand(copies, -1, -1, -1), context,
                                         control[(..., *pixels)].expand(copies, -1, -1, -1), options, plans)
            return denoiser(x[..., rows, columns], timestep)

        return tiled(tile, latent_height, latent_width, native, overlap)

    latents = sampler.sample(denoise, latents, timesteps, pipeline.alphas_cumprod, config.schedule.prediction_type,
                             eta=options.eta, generator=generator, progress=progress)
    return decode(vae, (latents / scale).to(dtype_of(vae)), native).float().clamp(-1, 1).cpu()


def lowpass(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What of (N, C, H, W) survives a resize to `size`: area down, bicubic back up to (H, W)."""
    return F.interpolate(F.interpolate(images, size=size, mode="area"), size=images.shape[-2:], mode="bicubic",
                         align_corners=False)


def keep_layout(painted: torch.Tensor, upscaled: torch.Tensor, object_mask: torch.Tensor,
                working: tuple[int, int]) -> torch.Tensor:
    """painted (N, 3, H', W') by the tiles, upscaled (N, 3, H', W') the working-size result's background
    resized, object_mask (1, H', W') -> painted's detail on upscaled's layout and colours: painted's
    background with the lowpass at the working size replaced. Its object is filled from around, with a
    rim of one working-size pixel: the tiles' rendition of the enlarged object's edge."""
    rim = math.ceil(max(painted.shape[-2] / working[0], painted.shape[-1] / working[1]))
    painted = background(painted, object_mask, tuple(painted.shape[-2:]), rim)
    return (painted + lowpass(upscaled - painted, working)).clamp(-1, 1)

