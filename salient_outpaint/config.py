"""Configuration dataclasses and the two presets this project serves.

`SD2_INPAINT` is the exact architecture of stabilityai/stable-diffusion-2-inpainting
("SI2") plus the ControlNet of the paper. `TOY` is the same architecture shrunk so
that it trains on a CPU in minutes; the synthetic toy world runs on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 9  # 4 noisy latents + 1 mask + 4 masked-image latents
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


@dataclass(frozen=True)
class ControlNetConfig:
    conditioning_channels: int = 3  # the inverted mask, repeated to RGB as in the authors' release
    # Each step after the first halves the resolution: len - 1 halvings must equal the VAE's factor.
    conditioning_embedding_channels: tuple[int, ...] = (16, 32, 96, 256)


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
        if self.unet.in_channels != 2 * self.vae.latent_channels + 1:
            raise ValueError("an inpainting U-Net reads latents + mask + masked-image latents "
                             f"= {2 * self.vae.latent_channels + 1} channels")


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
