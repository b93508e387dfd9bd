"""Model loading for the command-line tools and the app: the shipped toy model by default, or SI2
weights (+ a ControlNet) in any layout the checkpoint loader reads."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .checkpoints import load_checkpoint
from .checkpoints.diffusers import configured_variant
from .config import PRESETS
from .modules.models import Models, empty_models
from .precision import resolve_dtype

REPOSITORY = Path(__file__).resolve().parent.parent
TOY_WEIGHTS = REPOSITORY / "weights" / "toy"
TOY_EXAMPLE = TOY_WEIGHTS / "example"


def load_models(checkpoint: str | Path | None = None, controlnet: str | Path | None = None,
                preset: str | None = None, with_controlnet: bool = True, dtype: torch.dtype | str | None = None,
                device: torch.device | str = "cpu") -> Models:
    """Load the preset's networks: `checkpoint` (default: the toy model) holds SI2 and possibly the
    ControlNet; `controlnet` names ControlNet weights kept elsewhere. The networks are built empty and
    filled in place, each tensor read, cast to `dtype` ('fp32', 'bf16', 'fp16' or a torch dtype;
    default: fp16 on a GPU, fp32 on a CPU) and moved to `device` one at a time."""
    preset = preset or ("sd2-inpaint" if checkpoint else "toy")
    checkpoint = Path(checkpoint) if checkpoint else TOY_WEIGHTS
    controlnet = controlnet if with_controlnet else None
    # A variant (docs/experiments.md) is read from the weights' config.json files.
    config = configured_variant(PRESETS[preset], [checkpoint] + ([controlnet] if controlnet else []))
    models = empty_models(config, with_controlnet, resolve_dtype(dtype, device))
    # With a ControlNet kept elsewhere, the checkpoint's own (if any) is not loaded: it may be another variant.
    loaded = load_checkpoint(checkpoint, replace(models, controlnet=None) if controlnet else models, device=device)
    if controlnet:
        loaded += load_checkpoint(controlnet, models, device=device)
    missing = [name for name in models.components() if name not in loaded]
    if missing:
        hint = " (pass --controlnet, or --no-controlnet for the SI2 baseline)" if missing == ["controlnet"] else ""
        raise ValueError(f"no weights for the {', '.join(missing)} in {checkpoint}{hint}")
    return models
