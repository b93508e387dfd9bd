"""salient-outpaint: background generation around a salient object that does not grow it.

A pure-PyTorch reimplementation of "Salient Object-Aware Background Generation using
Text-Guided Diffusion Models" (arXiv 2404.10157): Stable Diffusion 2 inpainting stays frozen,
a ControlNet reading the object mask steers it.
"""
from .config import PRESETS, SD2_INPAINT, TOY, ModelConfig

__all__ = ["PRESETS", "SD2_INPAINT", "TOY", "ModelConfig"]
