"""What a training run is: one frozen dataclass, saved inside every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..precision import DTYPES, resolve_dtype

STAGES = ("vae", "unet", "controlnet")


@dataclass(frozen=True)
class TrainConfig:
    # stage "controlnet" is the paper: the ControlNet learns on object masks, everything else frozen.
    # "vae" and "unet" train the toy world's own autoencoder and inpainting U-Net (pretrained SD2
    # weights take their place for real images).
    stage: str = "controlnet"
    preset: str = "toy"
    init: tuple[str, ...] = ()  # checkpoints loaded before training (any layout the loader reads)
    data: tuple[str, ...] = ("toy",)  # dataset specs, see salient_outpaint/data/specs.py
    data_weights: tuple[float, ...] = ()  # mixture weights, one per spec (default: equal)
    latents: str = ""  # a folder of precomputed VAE latents and text embeddings (latent_cache.py); "": encode live
    out_dir: str = "runs/controlnet"
    resolution: int = 64
    steps: int = 1000
    batch_size: int = 16  # per process and micro-step
    grad_accumulation: int = 1
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    ema_decay: float = 0.0  # 0 turns EMA off
    objective: str = ""  # "epsilon" or "v_prediction"; empty: the preset's
    precision: str = "fp32"  # autocast dtype for the forward pass: fp32, bf16 or fp16
    frozen_dtype: str = ""  # dtype the frozen networks are stored in; "": fp16 on a GPU, fp32 on a CPU
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the networks
    empty_prompt_probability: float = 0.1  # keeps classifier-free guidance possible
    kl_weight: float = 1e-6  # VAE stage only
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    validate_every: int = 0  # 0: no validation images
    resume: bool = False

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        for name, value in (("precision", self.precision), ("frozen_dtype", self.frozen_dtype or "fp32")):
            if value not in DTYPES:
                raise ValueError(f"{name} must be {', '.join(DTYPES)}, not {value!r}")
        if self.data_weights and len(self.data_weights) != len(self.data):
            raise ValueError("give one --data-weights value per --data spec")
        if self.latents and self.stage != "controlnet":
            raise ValueError("precomputed --latents serve the controlnet stage only: its paint mask is fixed by the "
                             f"object mask, while the {self.stage} stage draws new masks (or trains the encoder) "
                             "at every step")

    def to_dict(self) -> dict:
        return asdict(self)



def frozen_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """--frozen-dtype, or the device's default; warns where it is slow."""
    return resolve_dtype(config.frozen_dtype or None, device, "--frozen-dtype")
