"""What a training run is: one frozen dataclass, saved inside every checkpoint (as JSON) and compared
with the command line when the run is resumed."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import torch

from ..config import PRESETS, ModelConfig, variant
from ..inputs import MAX_RESOLUTION, check_number, flag
from ..precision import DTYPES, resolve_dtype

STAGES = ("vae", "decoder", "unet", "controlnet")
AUTOENCODER_STAGES = ("vae", "decoder")  # trained on reconstruction (objective.vae_loss), not on denoising


@dataclass(frozen=True)
class TrainConfig:
    # stage "controlnet" is the paper: the ControlNet learns on object masks, everything else frozen.
    # "vae" and "unet" train the toy world's own autoencoder and inpainting U-Net (pretrained SD2
    # weights take their place for real images). "decoder" fine-tunes the VAE's decoder alone, the encoder
    # frozen, so that the latents the U-Net and ControlNet learnt keep their meaning (as SD's ft-MSE VAE).
    stage: str = "controlnet"
    preset: str = "toy"
    init: tuple[str, ...] = ()  # checkpoints loaded before training (any layout the loader reads)
    # Model variants for the ablations (docs/experiments.md); 0 / "" keep the preset's. The exported
    # weights' config.json files record them, so sample.py and evaluate.py load them without flags.
    unet_in_channels: int = 0  # 4: a text-to-image U-Net, no mask or masked-image channels
    controlnet_in_channels: int = 0  # 4: the ControlNet reads the noisy latents alone
    control_image: str = ""  # what the ControlNet's control image shows, one of config.CONTROL_IMAGES
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
    texture_weight: float = 0.0  # vae and decoder stages: weight of objective.texture_loss (0: off)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2  # the newest N training checkpoints are kept
    validate_every: int = 0  # 0: no validation images
    validation_image: tuple[str, ...] = ()  # the user's own validation images (default: the first data items)
    validation_mask: tuple[str, ...] = ()  # one object mask per validation image
    validation_prompt: tuple[str, ...] = ()  # one prompt per validation image (default: "")
    log_to: str = ""  # "tensorboard": also write TensorBoard events beside log.jsonl
    num_workers: int = 0  # DataLoader worker processes reading batches ahead (0: on the training thread)
    skip_data_check: bool = False
    resume: bool = False

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self.stage not in STAGES:
            raise ValueError(f"unknown stage {self.stage!r}; choose one of {', '.join(STAGES)}")
        for name, value in (("precision", self.precision), ("frozen_dtype", self.frozen_dtype or "fp32")):
            if value not in DTYPES:
                raise ValueError(f"{name} must be {', '.join(DTYPES)}, not {value!r}")
        for name in ("steps", "batch_size", "grad_accumulation", "log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be at least 1, not {getattr(self, name)}")
        for name, bounds in NUMBER_RANGES.items():
            check_number(flag(name), getattr(self, name), **bounds)
        for weight in self.data_weights:
            check_number("--data-weights", weight, above=0)
        model = self.model_config()  # a variant the architecture cannot take fails here, before any work
        block = model.vae.downsample_factor * 2 ** (len(model.unet.block_out_channels) - 1)
        if self.resolution % block or not block <= self.resolution <= MAX_RESOLUTION:
            raise ValueError(f"--resolution must be a multiple of {block} from {block} to {MAX_RESOLUTION} (a pixel "
                             f"block that the {self.preset} VAE and U-Net halve down to one latent), got "
                             f"{self.resolution}")
        if self.seed < 0:
            raise ValueError(f"--seed must be 0 or more, not {self.seed}")
        if self.warmup_steps < 0 or self.validate_every < 0:
            raise ValueError("--warmup-steps and --validate-every must be 0 or more, not "
                             f"{self.warmup_steps} and {self.validate_every}")
        if not self.out_dir.strip():
            raise ValueError("--out-dir is empty; give a folder (it is created if missing)")
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be 0 or more, not {self.num_workers}")
        if self.log_to not in LOG_SINKS:
            raise ValueError(f"--log-to must be one of {', '.join(repr(sink) for sink in LOG_SINKS)}, "
                             f"not {self.log_to!r}")
        if len(self.validation_mask) != len(self.validation_image) or \
                len(self.validation_prompt) not in (0, len(self.validation_image)):
            raise ValueError(f"give one --validation-mask (and, if any, one --validation-prompt) per "
                             f"--validation-image; got {len(self.validation_image)} image(s), "
                             f"{len(self.validation_mask)} mask(s), {len(self.validation_prompt)} prompt(s)")
        if self.validation_image and not self.validate_every:
            raise ValueError("--validation-image is drawn every --validate-every N steps; give N")
        if self.data_weights and len(self.data_weights) != len(self.data):
            raise ValueError("give one --data-weights value per --data spec")
        if self.latents and any(spec.startswith("shards:") for spec in self.data):
            raise ValueError("precomputed --latents are made from indexable data (folders, COCO, toy), not shards:")
        if self.texture_weight and self.stage not in AUTOENCODER_STAGES:
            raise ValueError(f"--texture-weight is a term of the {' and '.join(AUTOENCODER_STAGES)} stages' loss, "
                             f"not the {self.stage} stage's; leave it out (0)")
        if self.latents and self.stage != "controlnet":
            raise ValueError("precomputed --latents serve the controlnet stage only: its paint mask is fixed by the "
                             f"object mask, while the {self.stage} stage draws new masks (or trains the encoder) "
                             "at every step")
        if self.latents and self.control_image == "masked_object":
            raise ValueError("the masked_object control image is made from the image, which precomputed --latents "
                             "do not keep; train it without --latents")

    def model_config(self) -> ModelConfig:
        """The preset with this run's variant applied."""
        return variant(PRESETS[self.preset], self.unet_in_channels or None, self.controlnet_in_channels or None,
                       self.control_image or None)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


LOG_SINKS = ("", "tensorboard")
# The float options' ranges (inputs.range_problem: NaN and infinity are refused too). An EMA decay of 1
# would never move; a negative clipping norm flips the gradients; a negative learning rate climbs the loss.
NUMBER_RANGES = {"learning_rate": {"above": 0}, "weight_decay": {"at_least": 0}, "max_grad_norm": {"above": 0},
                 "ema_decay": {"at_least": 0, "below": 1}, "empty_prompt_probability": {"at_least": 0, "at_most": 1},
                 "kl_weight": {"at_least": 0}, "texture_weight": {"at_least": 0}}

# What a resumed run may set anew: when to log, checkpoint and validate, how long to run, how the data
# is read (not which data), how much memory the backward pass takes. Every other field decides the
# weights, so a difference in it is an error (see resume_conflicts).
CHANGEABLE_ON_RESUME = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "validate_every",
                        "validation_image", "validation_mask", "validation_prompt", "log_to", "num_workers",
                        "skip_data_check", "gradient_checkpointing", "out_dir", "resume")


def shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def resume_conflicts(saved: dict, config: TrainConfig) -> list[str]:
    """The fields, other than CHANGEABLE_ON_RESUME, where a checkpoint's config and this run's differ,
    as "--flag OLD (now NEW)". A field the checkpoint lacks (it was written before the field existed)
    counts as its default."""
    conflicts = []
    for field in fields(TrainConfig):
        if field.name in CHANGEABLE_ON_RESUME:
            continue
        old, new = saved.get(field.name, field.default), getattr(config, field.name)
        if isinstance(old, list):
            old = tuple(old)  # JSON has no tuples
        if old != new:
            conflicts.append(f"{flag(field.name)} {shown(old) or '(none)'} (now {shown(new) or '(none)'})")
    return conflicts


def frozen_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """--frozen-dtype, or the device's default; warns where it is slow."""
    return resolve_dtype(config.frozen_dtype or None, device, "--frozen-dtype")
