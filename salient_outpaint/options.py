"""How to sample: one frozen dataclass, every field checked where it is made, so that a command line
learns of a bad flag before it loads a model (sample.py, evaluate.py) and the app says it in the page.

Each refusal is an OptionError: one sentence naming the option, its value and the range. It names
the option by its field (control_scale); a command line says it as its flag (--control-scale).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from typing import Callable

from .config import PRESETS
from .inputs import InputError, flag, range_problem
from .sampling import SAMPLERS
from .sampling.schedule import most_steps

MAX_STEPS = min(most_steps(config.schedule.num_train_timesteps) for config in PRESETS.values())  # 999


class OptionError(InputError):
    """`sentence(name)` says what is wrong, naming each option as name(field)."""

    def __init__(self, sentence: Callable[[Callable[[str], str]], str]):
        super().__init__(sentence(str))
        self.sentence = sentence

    def with_flags(self) -> str:
        """The message as a command line says it: control_scale -> --control-scale."""
        return self.sentence(flag)


@dataclass(frozen=True)
class SamplingOptions:
    steps: int = 20
    guidance: float = 7.5  # classifier-free guidance scale; <= 1 turns guidance off
    control_scale: float = 1.0  # 0 reproduces plain SI2
    sampler: str = "dpm++2m"
    eta: float = 0.0  # DDIM only
    paste_back: bool = False  # put the original object pixels back (the VAE round trip is lossy); always
    # done with a text-to-image U-Net
    feather: int = 2  # pixels of soft edge for the paste-back
    control_start: float = 0.0  # the ControlNet acts from this fraction of the steps ...
    control_end: float = 1.0  # ... to this one (diffusers' control_guidance_start / _end)
    guidance_end: float = 1.0  # classifier-free guidance at step i of n only while (i + 1) / n <= this
    cache_interval: int = 1  # feature reuse: a full network call every this many steps, cheap ones between
    reuse_guidance: bool = False  # cheap steps run the conditional branch alone, adding the last full step's
    # guidance direction (conditional - unconditional) at the guidance scale

    def __post_init__(self):
        steps = self.steps
        if steps < 1:
            raise OptionError(lambda name: f"{name('steps')} must be at least 1, got {steps} (1 to {MAX_STEPS})")
        if steps > MAX_STEPS:
            raise OptionError(lambda name: f"{name('steps')} must be at most {MAX_STEPS}, got {steps} (1 to "
                                           f"{MAX_STEPS}: the schedule has {MAX_STEPS + 1} timesteps)")
        for field in ("guidance", "control_scale", "eta"):
            check_scale(field, getattr(self, field))
        if self.sampler not in SAMPLERS:
            sampler = self.sampler
            raise OptionError(lambda name: f"unknown {name('sampler')} {sampler!r}; choose one of "
                                           f"{', '.join(SAMPLERS)}")
        start, end = self.control_start, self.control_end
        if not 0.0 <= start < end <= 1.0:  # also false for NaN
            raise OptionError(lambda name: f"{name('control_start')} {start:g} and {name('control_end')} {end:g} "
                                           "must satisfy 0 <= start < end <= 1 (fractions of the sampling steps)")
        guidance_end = self.guidance_end
        if not 0.0 <= guidance_end <= 1.0:  # also false for NaN
            raise OptionError(lambda name: f"{name('guidance_end')} must be in [0, 1] (a fraction of the sampling "
                                           f"steps), got {guidance_end:g}")
        interval = self.cache_interval
        if interval < 1:
            raise OptionError(lambda name: f"{name('cache_interval')} must be at least 1 (1: no feature reuse), "
                                           f"got {interval}")


def check_scale(field: str, value: float) -> None:
    """A weight or noise level: finite and >= 0."""
    problem = range_problem(value, at_least=0)
    if problem:
        raise OptionError(lambda name: f"{name(field)} must {problem}, got {value}")


# Named settings, as a whole: "authors" is the authors' notebook (UniPC, 20 steps, guidance 7.5, the
# ControlNet at full scale; their pipeline's own default scale is 0.5), for one-to-one comparisons.
# "fast": the authors' guidance and scale at 0.295x their FLOPs per SD2 image (flops.py): 10 UniPC
# steps, the networks whole every 3rd step, cheap steps between them steered by the ControlNet's
# shallow residuals and guided by the last full step's direction, the last step unguided
# (docs/experiments.md, "Speed": the sweep's best fidelity within the FLOPs bound).
SAMPLING_PRESETS = {"authors": SamplingOptions(sampler="unipc", steps=20, guidance=7.5, control_scale=1.0),
                    "fast": SamplingOptions(sampler="unipc", steps=10, guidance=7.5, control_scale=1.0,
                                            cache_interval=3, reuse_guidance=True, guidance_end=0.9)}


def preset_with(preset: str | None, default: SamplingOptions, **given) -> SamplingOptions:
    """The options of the named preset (None: `default`), overridden by the values given; a value of
    None is "not given" (a command line's flag left out), so it does not override the preset's."""
    base = SAMPLING_PRESETS[preset] if preset else default
    return replace(base, **{name: value for name, value in given.items() if value is not None})


def add_speed_arguments(group, default: SamplingOptions) -> None:
    """The flags of the faster sampling paths (sample.py, evaluate.py); None when not given, so that a
    --preset-sampling keeps its own values (preset_with)."""
    group.add_argument("--guidance-end", type=float, metavar="F",
                       help="classifier-free guidance at step i of n only while (i + 1) / n <= F; later steps run the "
                            f"conditional branch alone (default: {default.guidance_end:g}, every step)")
    group.add_argument("--cache-interval", type=int, metavar="N",
                       help="feature reuse: the whole U-Net and ControlNet every N steps; the steps between reuse "
                            "the U-Net's deep features, recomputing its and the ControlNet's shallowest level "
                            f"(default: {default.cache_interval}, none)")
    group.add_argument("--reuse-guidance", action=argparse.BooleanOptionalAction,
                       help="on those cheap steps, the conditional branch alone plus the last full step's guidance "
                            "direction (default: off)")
