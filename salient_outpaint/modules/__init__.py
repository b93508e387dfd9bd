"""The four networks of the system and a builder that wires them from one `ModelConfig`."""
from .controlnet import ControlNet
from .models import Models, build_models
from .text import TextEncoder, Tokenizer
from .unet import ControlResiduals, UNet
from .vae import AutoencoderKL

__all__ = ["AutoencoderKL", "ControlNet", "ControlResiduals", "Models", "TextEncoder", "Tokenizer", "UNet",
           "build_models"]
