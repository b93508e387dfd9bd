"""torch.compile takes the U-Net, the ControlNet and the VAE whole (fullgraph=True: a graph break
is an error) and computes what they compute uncompiled.

The `eager` backend runs dynamo's tracing (where graph breaks show) without generating code, so
the check is quick; inductor, which generates and compiles C++ for the CPU, is the slow test.
Tolerance: eager replays the same ops, so the outputs agree to float rounding (1e-6); inductor
fuses and reorders them, which moves fp32 results by ~1e-5 relative on these small networks.
"""
import pytest
import torch

from salient_outpaint.config import TOY
from salient_outpaint.modules import build_models
from salient_outpaint.modules.models import compile_models


def toy_inputs():
    torch.manual_seed(1)
    return dict(latent_input=torch.randn(2, 9, 16, 16), timesteps=torch.tensor([10, 500]),
                context=torch.randn(2, 77, 64), control_image=torch.rand(2, 3, 64, 64),
                image=torch.rand(1, 3, 64, 64) * 2 - 1, latents=torch.randn(1, 4, 16, 16))


def run_networks(models, inputs):
    """The ControlNet-steered U-Net, the VAE's encoder (via encode) and decoder."""
    with torch.no_grad():
        residuals = models.controlnet(inputs["latent_input"], inputs["timesteps"], inputs["context"],
                                      inputs["control_image"], conditioning_scale=0.8)
        noise = models.unet(inputs["latent_input"], inputs["timesteps"], inputs["context"], residuals)
        return [noise, residuals.mid, *residuals.down, models.vae.encode(inputs["image"]).mean,
                models.vae.decode(inputs["latents"])]


def randomised_toy_models():
    torch.manual_seed(0)
    models = build_models(TOY)
    with torch.no_grad():  # move the zero convs, so the ControlNet's residuals are not all zero
        for parameter in models.controlnet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    for module in models.components().values():
        module.eval()
    return models


def compiled_matches_eager(backend, tolerance):
    torch._dynamo.reset()
    models, inputs = randomised_toy_models(), toy_inputs()
    expected = run_networks(models, inputs)
    compile_models(models, backend=backend)
    outputs = run_networks(models, inputs)
    assert len(outputs) == len(expected)
    for out, reference in zip(outputs, expected):
        torch.testing.assert_close(out, reference, **tolerance)
    torch._dynamo.reset()


def test_unet_controlnet_and_vae_compile_without_graph_breaks():
    compiled_matches_eager("eager", dict(rtol=1e-6, atol=1e-6))


@pytest.mark.slow
def test_inductor_compiled_networks_match_uncompiled():
    compiled_matches_eager("inductor", dict(rtol=1e-4, atol=1e-4))


def run_cheap_step(models, inputs):
    """A full step keeping the U-Net's deep features, then a cheap step on them steered by the
    ControlNet's shallow residuals (pipeline.py's feature reuse)."""
    with torch.no_grad():
        residuals = models.controlnet(inputs["latent_input"], inputs["timesteps"], inputs["context"],
                                      inputs["control_image"], conditioning_scale=0.8)
        noise, deep = models.unet(inputs["latent_input"], inputs["timesteps"], inputs["context"], residuals,
                                  keep_deep=True)
        shallow = models.controlnet(inputs["latent_input"], inputs["timesteps"] - 5, inputs["context"],
                                    inputs["control_image"], conditioning_scale=0.8, shallow=True)
        cheap = models.unet(inputs["latent_input"], inputs["timesteps"] - 5, inputs["context"], shallow, deep=deep)
        return [noise, deep, *shallow.down, cheap]


def test_the_cheap_step_of_feature_reuse_compiles_without_graph_breaks():
    torch._dynamo.reset()
    models, inputs = randomised_toy_models(), toy_inputs()
    expected = run_cheap_step(models, inputs)
    compile_models(models, backend="eager")
    outputs = run_cheap_step(models, inputs)
    for out, reference in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, reference, rtol=1e-6, atol=1e-6)
    torch._dynamo.reset()
