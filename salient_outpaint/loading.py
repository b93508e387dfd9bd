"""Model loading for the command-line tools and the app: the shipped toy model by default, or SI2
weights (+ a ControlNet) in any layout the checkpoint loader reads."""
from __future__ import annotations

from pathlib import Path

from .checkpoints import load_checkpoint
from .config import PRESETS
from .modules import build_models
from .modules.models import Models

REPOSITORY = Path(__file__).resolve().parent.parent
TOY_WEIGHTS = REPOSITORY / "weights" / "toy"
TOY_EXAMPLE = TOY_WEIGHTS / "example"


def load_models(checkpoint: str | Path | None = None, controlnet: str | Path | None = None,
                preset: str | None = None, with_controlnet: bool = True) -> Models:
    """Build the preset's networks and load them: `checkpoint` (default: the toy model) holds SI2 and
    possibly the ControlNet; `controlnet` names ControlNet weights kept elsewhere."""
    preset = preset or ("sd2-inpaint" if checkpoint else "toy")
    checkpoint = Path(checkpoint) if checkpoint else TOY_WEIGHTS
    models = build_models(PRESETS[preset], with_controlnet=with_controlnet)
    loaded = load_checkpoint(checkpoint, models)
    if controlnet and with_controlnet:
        loaded += load_checkpoint(controlnet, models)
    missing = [name for name in models.components() if name not in loaded]
    if missing:
        hint = " (pass --controlnet, or --no-controlnet for the SI2 baseline)" if missing == ["controlnet"] else ""
        raise ValueError(f"no weights for the {', '.join(missing)} in {checkpoint}{hint}")
    return models
