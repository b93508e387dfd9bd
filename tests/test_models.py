"""The networks themselves: sizes of the real architecture, the ControlNet's zero start,
gradient checkpointing, odd latent sizes."""
import pytest
import torch

from salient_outpaint.config import SD2_INPAINT, TOY
from salient_outpaint.modules import ControlNet, build_models
from tests.conftest import toy_unet_with_and_without_controlnet


def count(module):
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.slow
def test_sd2_inpaint_at_full_size_has_the_released_parameter_counts_and_runs():
    torch.manual_seed(0)
    models = build_models(SD2_INPAINT)
    # Counts of stabilityai/stable-diffusion-2-inpainting (diffusers reports the same numbers).
    assert count(models.unet) == 865_925_124  # ~866M, 9-channel conv_in included
    assert count(models.vae) == 83_653_863  # ~84M
    assert count(models.controlnet) == 364_242_640  # ~364M, the authors' 9-channel ControlNet
    assert count(models.text_encoder) == 340_387_840  # 23 of ViT-H/14's 24 text blocks
    latent_input = torch.randn(1, 9, 8, 8)  # a 64x64 image: small enough for a CPU
    context = torch.randn(1, 77, 1024)
    with torch.no_grad():
        residuals = models.controlnet(latent_input, torch.tensor([500]), context, torch.rand(1, 3, 64, 64))
        out = models.unet(latent_input, torch.tensor([500]), context, residuals)
        text = models.text_encoder(torch.zeros(1, 77, dtype=torch.long))
        image = models.vae.decode(models.vae.encode(torch.rand(1, 3, 64, 64)).mean)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    assert len(residuals.down) == 12
    assert text.shape == (1, 77, 1024) and image.shape == (1, 3, 64, 64)


def test_toy_config_is_a_few_million_parameters():
    models = build_models(TOY)
    total = sum(count(module) for module in models.components().values())
    assert 2e6 < total < 10e6


def test_controlnet_built_from_unet_copies_its_encoder_and_starts_as_a_no_op():
    torch.manual_seed(0)
    models = build_models(TOY)
    unet_weights = models.unet.state_dict()
    for key, value in models.controlnet.state_dict().items():
        if key.startswith("controlnet_"):
            if key.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                assert not value.any(), f"{key} should start at zero"
        else:
            assert torch.equal(value, unet_weights[key]), f"{key} was not copied from the U-Net"
    controlled, plain = toy_unet_with_and_without_controlnet(models, torch.tensor([3, 900]))
    assert torch.equal(controlled, plain)


def test_controlnet_residuals_scale_linearly_with_the_conditioning_scale():
    torch.manual_seed(0)
    controlnet = build_models(TOY).controlnet
    with torch.no_grad():
        for parameter in controlnet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        args = (torch.randn(1, 9, 16, 16), torch.tensor([10]), torch.randn(1, 77, 64), torch.rand(1, 3, 64, 64))
        full, half = controlnet(*args, conditioning_scale=1.0), controlnet(*args, conditioning_scale=0.5)
    assert full.mid.abs().sum() > 0
    torch.testing.assert_close(half.mid, 0.5 * full.mid)
    for a, b in zip(half.down, full.down):
        torch.testing.assert_close(a, 0.5 * b)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    models = build_models(TOY)
    latent_input, context = torch.randn(2, 9, 16, 16), torch.randn(2, 77, 64)
    control = torch.rand(2, 3, 64, 64)

    def gradients(checkpointing):
        models.controlnet.zero_grad()
        models.unet.gradient_checkpointing = models.controlnet.gradient_checkpointing = checkpointing
        residuals = models.controlnet(latent_input, torch.tensor([5, 50]), context, control)
        models.unet(latent_input, torch.tensor([5, 50]), context, residuals).square().mean().backward()
        return [p.grad.clone() for p in models.controlnet.parameters()]

    for plain, checkpointed in zip(gradients(False), gradients(True)):
        torch.testing.assert_close(plain, checkpointed)


def test_unet_handles_latent_sizes_that_do_not_halve_evenly():
    unet = build_models(TOY, with_controlnet=False).unet
    with torch.no_grad():
        out = unet(torch.randn(1, 9, 18, 14), torch.tensor([1]), torch.randn(1, 77, 64))
    assert out.shape == (1, 4, 18, 14)


def test_controlnet_from_unet_keeps_the_unet_dtype():
    unet = build_models(TOY, with_controlnet=False).unet.to(torch.bfloat16)
    assert ControlNet.from_unet(unet, TOY.controlnet).conv_in.weight.dtype == torch.bfloat16
