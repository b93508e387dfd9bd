"""Our networks, loaded through our key maps, reproduce the reference implementations.

Fixtures come from tests/fixtures/make_model_fixtures.py (diffusers, transformers, open_clip
with random weights). Tolerance: all fp32; the references and we compute the same ops in a
slightly different order (fused vs split attention, GEGLU chunking), which moves results by a
few ulps per op. 1e-5 relative (atol 1e-5 on outputs of order 1) covers that; a wrong key or a
wrong layer order gives errors of order 1.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from salient_outpaint.checkpoints import load_checkpoint
from salient_outpaint.modules import build_models
from tests.fixtures.tiny_config import TINY

FIXTURES = Path(__file__).parent / "fixtures"
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIXTURES / "tiny_io.safetensors"))


@pytest.fixture(scope="module", params=["diffusers folder", "ldm single file"])
def models(request):
    path = FIXTURES / ("tiny_diffusers" if request.param == "diffusers folder" else "tiny_ldm.safetensors")
    torch.manual_seed(123)  # different from the reference weights, so loading must overwrite everything
    loaded_models = build_models(TINY)
    loaded = load_checkpoint(path, loaded_models)
    assert sorted(loaded) == ["controlnet", "text_encoder", "unet", "vae"]
    for module in loaded_models.components().values():
        module.eval()
    return request.param, loaded_models


def test_unet_matches_reference(models, io):
    _, m = models
    with torch.no_grad():
        out = m.unet(io["input_latent_input"], io["input_timesteps"], io["input_context"])
    torch.testing.assert_close(out, io["unet_out"], **TOLERANCE)


def test_controlnet_residuals_and_controlled_unet_match_reference(models, io):
    _, m = models
    with torch.no_grad():
        residuals = m.controlnet(io["input_latent_input"], io["input_timesteps"], io["input_context"],
                                 io["input_control_image"], conditioning_scale=0.7)
        out = m.unet(io["input_latent_input"], io["input_timesteps"], io["input_context"], residuals)
    assert len(residuals.down) == sum(key.startswith("controlnet_down_") for key in io)
    for i, residual in enumerate(residuals.down):
        torch.testing.assert_close(residual, io[f"controlnet_down_{i}"], **TOLERANCE)
    torch.testing.assert_close(residuals.mid, io["controlnet_mid"], **TOLERANCE)
    torch.testing.assert_close(out, io["unet_controlled_out"], **TOLERANCE)


def test_vae_matches_reference(models, io):
    _, m = models
    with torch.no_grad():
        posterior = m.vae.encode(io["input_image"])
        decoded = m.vae.decode(posterior.mean)
    torch.testing.assert_close(posterior.mean, io["vae_mean"], **TOLERANCE)
    torch.testing.assert_close(posterior.logvar, io["vae_logvar"], **TOLERANCE)
    torch.testing.assert_close(decoded, io["vae_decoded"], **TOLERANCE)


def test_text_encoder_matches_reference(models, io):
    """The diffusers folder holds a Hugging Face CLIPTextModel; the ldm file holds an OpenCLIP tower
    whose last block SD2 skips. Each must reproduce its own reference."""
    layout, m = models
    with torch.no_grad():
        out = m.text_encoder(io["input_tokens"])
    expected = io["hf_clip_out"] if layout == "diffusers folder" else io["openclip_out"]
    torch.testing.assert_close(out, expected, **TOLERANCE)
