"""Whole-pipeline parity with the authors' ControlNet-inpainting pipeline (yahoo/photo-background-generation),
on TINY random weights (fixture: tests/fixtures/make_pipeline_fixtures.py).

Same weights, same initial latents, same generator for the masked image's latent sample, same prompt
embeddings (injected: the text encoder has its own parity test). Tolerance: 1e-4 absolute on images in
[0, 1]; float32 arithmetic in a different order over 8 steps of U-Net + ControlNet + VAE.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import salient_outpaint.pipeline as pipeline_module
from salient_outpaint.checkpoints import load_checkpoint
from salient_outpaint.modules import build_models
from salient_outpaint.pipeline import OutpaintPipeline, SamplingOptions
from tests.fixtures.tiny_config import TINY

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = load_file(FIXTURES / "pipeline.safetensors")
CASES = {"ddim_scale1": ("ddim", 1.0), "ddim_scale0": ("ddim", 0.0), "dpm_scale1": ("dpm++2m", 1.0)}


@pytest.fixture(scope="module")
def pipeline():
    models = build_models(TINY)
    load_checkpoint(FIXTURES / "tiny_diffusers", models)
    return OutpaintPipeline(models)


@pytest.mark.parametrize("case", CASES)
def test_pipeline_matches_the_authors_pipeline(pipeline, case, monkeypatch):
    sampler, scale = CASES[case]
    negative, positive = REFERENCE["negative_prompt_embeds"], REFERENCE["prompt_embeds"]
    monkeypatch.setattr(pipeline_module, "encode_prompts",
                        lambda encoder, tokenizer, prompts: torch.cat([negative] * 2 + [positive] * 2))
    image = REFERENCE["image_uint8"].float() / 127.5 - 1
    object_mask = (REFERENCE["object_mask_uint8"].float() / 255)[None]
    images = pipeline(image, object_mask, "(embeddings injected)", num_images=2,
                      options=SamplingOptions(steps=8, guidance=7.5, control_scale=scale, sampler=sampler),
                      generator=torch.Generator().manual_seed(7), latents=REFERENCE["latents"].clone())
    ours = (images + 1) / 2
    reference = REFERENCE[f"{case}.images"]
    assert reference.std() > 0.05  # a real image, not a constant
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4)


def test_the_controlnet_changes_the_reference_output():
    """Otherwise the scale-1 cases would not test the ControlNet path at all."""
    assert (REFERENCE["ddim_scale1.images"] - REFERENCE["ddim_scale0.images"]).abs().max() > 1e-2
