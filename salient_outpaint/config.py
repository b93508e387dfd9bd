"""Configuration dataclasses and the two presets this project serves.

`SD2_INPAINT` is the exact architecture of stabilityai/stable-diffusion-2-inpainting
("SI2") plus the ControlNet of the paper. `TOY` is the same architecture shrunk so
that it trains on a CPU in minutes; the synthetic toy world runs on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class UNetConfig:
    # 4 noisy latents + 1 mask + 4 masked-image latents (inpainting); 4 for a text-to-image U-Net
    in_channels: int = 9
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    # Which resolution levels carry a cross-attention transformer; SD's last level has none.
    cross_attention_levels: tuple[bool, ...] = (True, True, True, False)
    layers_per_block: int = 2
    attention_head_dim: int = 64  # channels per head (SD2 uses 64 at every level)
    cross_attention_dim: int = 1024  # width of the text embeddings
    norm_groups: int = 32

    def __post_init__(self):
        if len(self.block_out_channels) != len(self.cross_attention_levels):
            raise ValueError("block_out_channels and cross_attention_levels must have one entry per level")
        for channels in self.block_out_channels:
            if channels % self.attention_head_dim or channels % self.norm_groups:
                raise ValueError(f"{channels} channels do not divide into heads of "
                                 f"{self.attention_head_dim} and {self.norm_groups} norm groups")

    @property
    def inpainting(self) -> bool:
        """Whether the U-Net reads the mask and masked-image latents besides the noisy latents."""
        return self.in_channels > self.out_channels


@dataclass(frozen=True)
class VAEConfig:
    image_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_groups: int = 32
    scaling_factor: float = 0.18215  # makes SD latents roughly unit-variance

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class TextEncoderConfig:
    """An OpenCLIP text transformer. SD2 reads the output of the penultimate of
    ViT-H/14's 24 blocks (through the final LayerNorm), so only 23 are built."""
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 1024
    heads: int = 16
    layers: int = 23  # blocks that are built and run
    checkpoint_layers: int = 24  # blocks a full OpenCLIP checkpoint holds; the rest are unused


# What the ControlNet's control image shows (built in conditioning.py): "paint_mask", the background to
# paint as a white-on-black RGB image (the authors' release), or "masked_object", the object's own
# pixels with the background blanked to grey.
CONTROL_IMAGES = ("paint_mask", "masked_object")


@dataclass(frozen=True)
class ControlNetConfig:
    conditioning_channels: int = 3  # the control image is RGB
    # Each step after the first halves the resolution: len - 1 halvings must equal the VAE's factor.
    conditioning_embedding_channels: tuple[int, ...] = (16, 32, 96, 256)
    # How many of the U-Net's input channels its conv_in reads: all 9 (the paper), or the 4 noisy
    # latents alone, as a ControlNet for a text-to-image model does (the ablations, docs/experiments.md).
    in_channels: int = 9
    control_image: str = "paint_mask"

    def __post_init__(self):
        if self.control_image not in CONTROL_IMAGES:
            raise ValueError(f"unknown control image {self.control_image!r}; choose one of {', '.join(CONTROL_IMAGES)}")


@dataclass(frozen=True)
class ScheduleConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # linear in sqrt(beta), as SD was trained
    prediction_type: str = "epsilon"  # or "v_prediction"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    image_size: int  # the resolution the model was trained at
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    controlnet: ControlNetConfig = field(default_factory=ControlNetConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self):
        if self.unet.cross_attention_dim != self.text.width:
            raise ValueError("the U-Net's cross_attention_dim must equal the text encoder's width")
        control_factor = 2 ** (len(self.controlnet.conditioning_embedding_channels) - 1)
        if control_factor != self.vae.downsample_factor:
            raise ValueError(f"the ControlNet embeds its control image by {control_factor}x but the VAE "
                             f"downsamples by {self.vae.downsample_factor}x")
        if self.unet.out_channels != self.vae.latent_channels:
            raise ValueError("the U-Net must predict as many channels as the VAE's latents have")
        latents, inpainting = self.vae.latent_channels, 2 * self.vae.latent_channels + 1
        if self.unet.in_channels not in (inpainting, latents):
            raise ValueError(f"an inpainting U-Net reads latents + mask + masked-image latents = {inpainting} "
                             f"channels, a text-to-image one the {latents} latents alone, not {self.unet.in_channels}")
        if self.controlnet.in_channels not in (self.unet.in_channels, latents):
            raise ValueError(f"the ControlNet reads the U-Net's {self.unet.in_channels} input channels or the "
                             f"{latents} noisy latents alone, not {self.controlnet.in_channels}")


SD2_INPAINT = ModelConfig(name="sd2-inpaint", image_size=512)

TOY = ModelConfig(
    name="toy",
    image_size=64,
    unet=UNetConfig(block_out_channels=(32, 64, 64), cross_attention_levels=(True, True, False),
                    layers_per_block=1, attention_head_dim=16, cross_attention_dim=64, norm_groups=8),
    # 1 / std of the trained toy VAE's latents over held-out scenes (measured as SD measured 0.18215)
    vae=VAEConfig(block_out_channels=(32, 64, 64), layers_per_block=1, norm_groups=8, scaling_factor=0.715),
    text=TextEncoderConfig(width=64, heads=4, layers=2, checkpoint_layers=2),
    controlnet=ControlNetConfig(conditioning_embedding_channels=(8, 16, 32)),
)

PRESETS = {config.name: config for config in (SD2_INPAINT, TOY)}


def variant(config: ModelConfig, unet_in_channels: int | None = None, controlnet_in_channels: int | None = None,
            control_image: str | None = None) -> ModelConfig:
    """A config with another U-Net input (4: text-to-image), ControlNet input (4: the noisy latents alone)
    or control image; None keeps the config's (a ControlNet never reads more than its U-Net).
    What the ablations train (docs/experiments.md)."""
    unet = replace(config.unet, in_channels=unet_in_channels or config.unet.in_channels)
    controlnet = replace(config.controlnet,
                         in_channels=controlnet_in_channels or min(config.controlnet.in_channels, unet.in_channels),
                         control_image=control_image or config.controlnet.control_image)
    return replace(config, unet=unet, controlnet=controlnet)
