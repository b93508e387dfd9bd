"""Whole-pipeline parity with the authors' ControlNet-inpainting pipeline (yahoo/photo-background-generation),
on TINY random weights (fixture: tests/fixtures/make_pipeline_fixtures.py).

Same weights, inputs (a 48 x 64 scene: latents 6 x 8, odd sizes for the U-Net's upsamplers), initial
latents or generator seed, and token ids: TINY's 1000-entry vocabulary cannot hold CLIP's BPE ids, so
each prompt is a fixed row of ids, which our text encoder reads here and transformers' CLIPTextModel
read for the reference. Everything else is ours: masks, masked image, VAE posterior sample, sampler,
U-Net + ControlNet, guidance, decoding.

Tolerance: 1e-4 absolute on images in [0, 1]. All float32; the two sides order the same operations
differently (fused attention, float64 vs float32 schedule coefficients), a few float32 roundings per op
that eight steps with guidance 7.5 amplify: measured at most 2.7e-6 (mean 2e-7) over all cases.
The classic mistakes are far above it: an inverted control image moves pixels by 3.5e-3 (with the
fixture's CONTROL_BOOST), the posterior's mode instead of a sample 0.1, an unmasked image 2.7e-2,
swapped prompts 0.58, an area-averaged latent mask 6e-2.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from salient_outpaint.checkpoints import load_checkpoint
from salient_outpaint.modules import build_models
from salient_outpaint.pipeline import OutpaintPipeline, SamplingOptions
from tests.fixtures.tiny_config import TINY

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = load_file(FIXTURES / "pipeline.safetensors")
TOLERANCE = 1e-4
# the fixture's cases: name -> (sampler, ControlNet scale, guidance, eta, images, initial latents)
CASES = {
    "ddim_scale1": ("ddim", 1.0, 7.5, 0.0, 2, "given"),
    "ddim_scale0": ("ddim", 0.0, 7.5, 0.0, 1, "given"),
    "dpm_scale1": ("dpm++2m", 1.0, 7.5, 0.0, 1, "given"),
    "ddim_eta1_drawn": ("ddim", 1.0, 7.5, 1.0, 1, "drawn"),
    "dpm_unguided": ("dpm++2m", 1.0, 1.0, 0.0, 1, "given"),
}
STEPS, SEED = 8, 7
PROMPT, NEGATIVE_PROMPT = "a prompt", ""


class FixedTokens:
    """Stands in for the tokenizer: each prompt string -> its fixed (77,) row of the fixture's token ids."""

    def __init__(self):
        self.rows = {PROMPT: REFERENCE["prompt_tokens"], NEGATIVE_PROMPT: REFERENCE["negative_prompt_tokens"]}

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([self.rows[prompt] for prompt in prompts])


@pytest.fixture(scope="module")
def pipeline():
    models = build_models(TINY)
    load_checkpoint(FIXTURES / "tiny_diffusers", models)
    conv_out = models.controlnet.controlnet_cond_embedding.conv_out  # as the fixture did: see CONTROL_BOOST there
    with torch.no_grad():
        conv_out.weight.mul_(REFERENCE["control_boost"])
        conv_out.bias.mul_(REFERENCE["control_boost"])
    pipeline = OutpaintPipeline(models)
    pipeline.tokenizer = FixedTokens()
    return pipeline


def inputs(rows: int = 48, columns: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixture's image (3, H, W) in [-1, 1] and object mask (1, H, W), cropped to rows x columns."""
    image = REFERENCE["image_uint8"].float() / 127.5 - 1
    object_mask = (REFERENCE["object_mask_uint8"].float() / 255)[None]
    return image[:, :rows, :columns], object_mask[:, :rows, :columns]


def run(pipeline, case: str, rows: int = 48, columns: int = 64) -> torch.Tensor:
    sampler, scale, guidance, eta, images, initial = CASES[case]
    image, object_mask = inputs(rows, columns)
    options = SamplingOptions(steps=STEPS, guidance=guidance, control_scale=scale, sampler=sampler, eta=eta)
    latents = REFERENCE["latents"][:images].clone() if initial == "given" else None
    result = pipeline(image, object_mask, PROMPT, NEGATIVE_PROMPT, num_images=images, options=options,
                      generator=torch.Generator().manual_seed(SEED), latents=latents)
    return (result + 1) / 2  # in [0, 1], as the reference's output_type="np"


def test_fixture_cases_are_the_ones_tested():
    assert {key.split(".")[0] for key in REFERENCE if key.endswith(".images")} == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_pipeline_matches_the_authors_pipeline(pipeline, case):
    reference = REFERENCE[f"{case}.images"]
    assert reference.std() > 0.05  # a real image, not a constant
    ours = run(pipeline, case)
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=TOLERANCE)


def test_sizes_that_are_not_multiples_of_8_are_padded_then_cropped(pipeline):
    """The authors round H, W down to multiples of 8 and resize; we pad instead (painted, then cropped),
    so the object is never resampled. Cropping the scene to 44 x 60 (the object stays clear of the cut)
    and padding it back gives the reference's 48 x 64 inputs: the background there is blanked in the
    masked image and painted either way. So our 44 x 60 output is the reference's, cropped."""
    image, object_mask = inputs()
    assert not object_mask[:, 44:].any() and not object_mask[:, :, 60:].any()
    ours = run(pipeline, "ddim_scale1", rows=44, columns=60)
    assert ours.shape == (2, 3, 44, 60)
    torch.testing.assert_close(ours, REFERENCE["ddim_scale1.images"][..., :44, :60], rtol=0, atol=TOLERANCE)


def test_the_fixture_cases_exercise_what_they_claim():
    """Otherwise a case could pass without testing its path: the ControlNet changes the image, and so do
    the guidance and the drawn (rather than given) noise."""
    def differ(case, other):
        return (REFERENCE[f"{case}.images"][:1] - REFERENCE[f"{other}.images"][:1]).abs().max() > 1e-2

    assert differ("ddim_scale1", "ddim_scale0")
    assert differ("dpm_scale1", "dpm_unguided")
    assert differ("ddim_scale1", "ddim_eta1_drawn")
