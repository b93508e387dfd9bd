"""Fewer network evaluations per image: guidance that stops (guidance_end) and feature reuse across steps
(cache_interval), on random TOY weights whose ControlNet acts. Their neutral values are the plain path bit
for bit; a cheap step is still steered by the ControlNet."""
from dataclasses import replace

import pytest
import torch

from salient_outpaint import conditioning
from salient_outpaint.config import TOY
from salient_outpaint.modules import build_models
from salient_outpaint.modules.unet import ControlResiduals
from salient_outpaint.options import SAMPLING_PRESETS, OptionError, SamplingOptions
from salient_outpaint.pipeline import OutpaintPipeline, StepPlan, full_steps, guided_steps

BASE = SamplingOptions(steps=4, guidance=3.0, sampler="unipc")


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    models = build_models(TOY)
    with torch.no_grad():  # shift the zero convolutions off zero, so that the ControlNet acts
        for parameter in models.controlnet.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return OutpaintPipeline(models)


def scene():
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:40, 20:44] = 1
    return image, mask


def run(pipeline, options):
    image, mask = scene()
    return pipeline(image, mask, "a red star in front of a brick wall", num_images=2, options=options,
                    generator=torch.Generator().manual_seed(3))


def plain_denoiser(self, mask_latent, masked_latents, context, control, options, plans):
    """The path without any of the savings: every step guided, the whole ControlNet and U-Net."""
    unet, controlnet = self.models.unet, self.models.controlnet

    def denoise(latents, timestep):
        unet_input = conditioning.unet_input(torch.cat([latents] * 2), mask_latent, masked_latents)
        residuals = controlnet(unet_input, timestep, context, control, options.control_scale)
        unconditional, conditional = unet(unet_input, timestep, context, residuals).chunk(2)
        return unconditional + options.guidance * (conditional - unconditional)

    return denoise


def test_cache_interval_1_and_guidance_end_1_are_the_plain_path_bit_for_bit(pipeline, monkeypatch):
    ours = run(pipeline, SamplingOptions(steps=4, guidance=3.0, sampler="unipc", cache_interval=1, guidance_end=1.0))
    monkeypatch.setattr(OutpaintPipeline, "denoiser", plain_denoiser)
    assert torch.equal(ours, run(pipeline, BASE))


def test_guidance_and_full_steps_follow_their_rules():
    run_of = lambda steps: list(range(steps * 10, 0, -10))  # noqa: E731
    assert guided_steps(run_of(10), 0.5) == [True] * 5 + [False] * 5
    assert guided_steps(run_of(3), 0.5) == [True] + [False] * 2  # 2/3 > 0.5
    assert guided_steps(run_of(4), 1.0) == [True] * 4 and guided_steps(run_of(4), 0.0) == [False] * 4
    assert full_steps(run_of(7), 3) == [True, False, False, True, False, False, True]
    assert full_steps(run_of(3), 1) == [True] * 3


def test_stopping_guidance_and_reusing_features_change_the_images(pipeline):
    plain = run(pipeline, BASE)
    for options in (SamplingOptions(steps=4, guidance=3.0, sampler="unipc", guidance_end=0.5),
                    SamplingOptions(steps=4, guidance=3.0, sampler="unipc", cache_interval=2),
                    SAMPLING_PRESETS["fast"]):
        images = run(pipeline, options)
        assert images.shape == plain.shape and torch.isfinite(images).all()
        assert not torch.equal(images, plain)


class ZeroableControlNet(torch.nn.Module):
    """The real ControlNet, its residuals zeroed while `zero` is set (only cheap steps may ask then)."""

    def __init__(self, real):
        super().__init__()
        self.real, self.config, self.zero = real, real.config, False

    def forward(self, *args, shallow=False, **kwargs):
        residuals = self.real(*args, shallow=shallow, **kwargs)
        if not self.zero:
            return residuals
        assert shallow and residuals.mid is None  # a cheap step asks for the shallow residuals alone
        return ControlResiduals(down=[torch.zeros_like(residual) for residual in residuals.down], mid=None)


def test_a_cheap_step_is_steered_by_the_controlnet(pipeline, monkeypatch):
    """From identical latents and cache entering a cheap step, its prediction with the ControlNet's
    (shallow) residuals differs from the one with them zeroed for that step alone."""
    models = pipeline.models
    generator = torch.Generator().manual_seed(5)
    mask_latent = torch.zeros(2, 1, 16, 16)
    mask_latent[..., 8:, :] = 1
    masked_latents = torch.randn(2, 4, 16, 16, generator=generator)
    context = torch.randn(2, 77, 64, generator=generator)
    control = mask_latent.new_ones(2, 3, 64, 64)
    control[..., 32:, :] = 0
    latents = torch.randn(1, 4, 16, 16, generator=generator)
    options = SamplingOptions(steps=2, guidance=3.0, cache_interval=2)
    plans = {900: StepPlan(controlled=True, guided=True, full=True),
             400: StepPlan(controlled=True, guided=True, full=False)}
    controlnet = ZeroableControlNet(models.controlnet)
    monkeypatch.setattr(models, "controlnet", controlnet)
    predictions = []
    for zero_at_cheap_step in (False, True):
        with torch.no_grad():
            denoise = pipeline.denoiser(mask_latent, masked_latents, context, control, options, plans)
            controlnet.zero = False
            denoise(latents, torch.tensor(900))  # the full step fills the cache: the same in both runs
            controlnet.zero = zero_at_cheap_step
            predictions.append(denoise(latents, torch.tensor(400)))
    assert predictions[0].shape == (1, 4, 16, 16)
    assert not torch.allclose(predictions[0], predictions[1], atol=1e-4)


def test_the_options_refuse_values_out_of_range():
    with pytest.raises(OptionError, match=r"guidance_end must be in \[0, 1\].*got 1.5"):
        SamplingOptions(guidance_end=1.5)
    with pytest.raises(OptionError, match="guidance_end"):
        SamplingOptions(guidance_end=float("nan"))
    with pytest.raises(OptionError, match="cache_interval must be at least 1.*got 0"):
        SamplingOptions(cache_interval=0)


def test_the_fast_preset_holds_the_swept_values():
    """docs/experiments.md, "Speed": the sweep's best fidelity within 0.30x authors' FLOPs."""
    fast = SAMPLING_PRESETS["fast"]
    assert (fast.sampler, fast.steps, fast.guidance, fast.control_scale) == ("unipc", 10, 7.5, 1.0)
    assert (fast.cache_interval, fast.reuse_guidance, fast.guidance_end) == (3, True, 0.9)


def test_the_command_lines_take_the_preset_and_refuse_bad_values_in_one_line(capsys):
    import evaluate as evaluate_cli
    import sample as sample_cli

    args = evaluate_cli.parse_args(["--toy", "2", "--generate", "--preset-sampling", "fast", "--cache-interval", "2"])
    options = evaluate_cli.generation(args).options
    assert options["controlnet"] == replace(SAMPLING_PRESETS["fast"], cache_interval=2)
    assert options["no-controlnet"].control_scale == 0.0
    plain = evaluate_cli.generation(evaluate_cli.parse_args(["--toy", "2", "--generate"])).options["controlnet"]
    assert (plain.sampler, plain.steps, plain.guidance, plain.cache_interval) == ("dpm++2m", 20, 5.0, 1)
    assert sample_cli.sampling_options(sample_cli.parse_args(["--preset-sampling", "fast"])) == SAMPLING_PRESETS["fast"]
    for argv in (["--cache-interval", "0"], ["--guidance-end", "1.5"]):
        assert sample_cli.main(argv) == 2
        assert evaluate_cli.main(["--toy", "2", "--generate", *argv]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == ["error: --cache-interval must be at least 1 (1: no feature reuse), got 0"] * 2 + [
        "error: --guidance-end must be in [0, 1] (a fraction of the sampling steps), got 1.5"] * 2
