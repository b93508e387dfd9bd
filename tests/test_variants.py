"""The ablation variants (docs/experiments.md) as options of the one code path: a ControlNet reading the
noisy latents alone, the masked object as the control image, a text-to-image U-Net; trained, saved,
loaded back without flags, sampled. The defaults stay the paper's design."""
import json
import math
from dataclasses import replace

import pytest
import torch

from salient_outpaint import conditioning
from salient_outpaint.checkpoints import save_checkpoint
from salient_outpaint.config import TOY, ControlNetConfig, ModelConfig, variant
from salient_outpaint.loading import load_models
from salient_outpaint.modules import build_models
from salient_outpaint.options import SamplingOptions
from salient_outpaint.pipeline import OutpaintPipeline
from salient_outpaint import distributed
from salient_outpaint.training.config import TrainConfig
from salient_outpaint.training.loop import Trainer

LATENT_CONTROLNET = {"controlnet_in_channels": 4}
OBJECT_CONTROL = {"control_image": "masked_object"}
TEXT_TO_IMAGE = {"unet_in_channels": 4, "control_image": "masked_object"}


def test_the_defaults_are_the_papers_design_and_the_shipped_weights_load_as_before():
    assert TOY.unet.in_channels == 9 and TOY.unet.inpainting
    assert TOY.controlnet.in_channels == 9 and TOY.controlnet.control_image == "paint_mask"
    assert variant(TOY) == TOY
    assert TrainConfig().model_config() == TOY
    # weights/toy: no unet/config.json, and a controlnet/config.json without control_image
    assert load_models().config == TOY


def test_a_text_to_image_unet_takes_a_controlnet_of_its_own_input():
    config = variant(TOY, unet_in_channels=4)
    assert config.unet.in_channels == 4 and not config.unet.inpainting
    assert config.controlnet.in_channels == 4  # never more than its U-Net reads


@pytest.mark.parametrize("change", [
    {"unet": replace(TOY.unet, in_channels=5)},
    {"controlnet": replace(TOY.controlnet, in_channels=5)},
    {"unet": replace(TOY.unet, in_channels=4), "controlnet": replace(TOY.controlnet, in_channels=9)},
])
def test_inputs_the_architecture_cannot_take_are_refused(change):
    base = {"name": "x", "image_size": 64, "unet": TOY.unet, "vae": TOY.vae, "text": TOY.text,
            "controlnet": TOY.controlnet}
    with pytest.raises(ValueError, match="reads"):
        ModelConfig(**{**base, **change})


def test_an_unknown_control_image_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="paint_mask, masked_object"):
        ControlNetConfig(control_image="mask")


def test_a_latent_controlnet_copies_the_latent_part_of_conv_in_and_starts_as_a_no_op():
    torch.manual_seed(0)
    models = build_models(variant(TOY, **LATENT_CONTROLNET))
    unet, controlnet = models.unet, models.controlnet
    assert controlnet.conv_in.weight.shape == (32, 4, 3, 3)
    assert torch.equal(controlnet.conv_in.weight, unet.conv_in.weight[:, :4])
    assert torch.equal(controlnet.conv_in.bias, unet.conv_in.bias)
    assert torch.equal(controlnet.down_blocks[0].resnets[0].conv1.weight, unet.down_blocks[0].resnets[0].conv1.weight)

    unet_input, context, timesteps = torch.randn(2, 9, 16, 16), torch.randn(2, 77, 64), torch.tensor([5, 800])
    with torch.no_grad():
        residuals = controlnet(conditioning.network_input(unet_input, 4), timesteps, context, torch.rand(2, 3, 64, 64))
        assert [r.shape for r in residuals.down] == [r.shape for r in build_models(TOY).controlnet(
            unet_input, timesteps, context, torch.rand(2, 3, 64, 64)).down]
        assert torch.equal(unet(unet_input, timesteps, context, residuals), unet(unet_input, timesteps, context))


def test_network_input_keeps_the_noisy_latents_first():
    noisy, mask, masked = torch.randn(2, 4, 8, 8), torch.ones(2, 1, 8, 8), torch.randn(2, 4, 8, 8)
    stacked = conditioning.unet_input(noisy, mask, masked)
    assert torch.equal(conditioning.network_input(stacked, 9), stacked)
    assert torch.equal(conditioning.network_input(stacked, 4), noisy)


def test_control_images_show_the_paint_mask_or_the_masked_object():
    image = torch.full((1, 3, 4, 4), -1.0)
    image[..., 0, :] = 1.0  # top row white
    image[..., 1, :] = 0.5
    object_mask = torch.zeros(1, 1, 4, 4)
    object_mask[..., :2, :2] = 1.0  # the object: the top-left 2x2 block
    paint_mask = conditioning.paint_mask_from_object(object_mask)

    as_mask = conditioning.control_image(paint_mask, image)
    assert as_mask.shape == (1, 3, 4, 4) and torch.equal(as_mask[:, 0], paint_mask[:, 0])

    as_object = conditioning.control_image(paint_mask, image, "masked_object")
    expected = torch.full((1, 3, 4, 4), 0.5)  # the background blanked to mid-grey
    expected[..., 0, :2], expected[..., 1, :2] = 1.0, 0.75  # the object's own pixels, in [0, 1]
    assert torch.allclose(as_object, expected)
    with pytest.raises(ValueError, match="masked_object"):
        conditioning.control_image(paint_mask, image, "edges")


def tiny_run(tmp_path, **overrides) -> TrainConfig:
    settings = {"stage": "controlnet", "preset": "toy", "data": ("toy:8",), "out_dir": str(tmp_path / "run"),
                "steps": 1, "batch_size": 2, "log_every": 1, "seed": 1}
    return TrainConfig(**{**settings, **overrides})


@pytest.mark.parametrize("options", [LATENT_CONTROLNET, OBJECT_CONTROL, TEXT_TO_IMAGE],
                         ids=["latent-controlnet", "object-control", "text-to-image"])
def test_a_variant_trains_exports_its_config_and_loads_back_without_flags(tmp_path, options):
    config = tiny_run(tmp_path, **options)
    trainer = Trainer(config, distributed.single_process())
    assert trainer.networks.config == config.model_config()
    before = trainer.networks.controlnet.controlnet_mid_block.weight.clone()
    loss = trainer.step(0, next(trainer.batches(0)))
    assert loss > 0 and not torch.equal(before, trainer.networks.controlnet.controlnet_mid_block.weight)

    folder = save_checkpoint(trainer.networks, tmp_path / "model", "diffusers")
    saved = json.loads((folder / "controlnet" / "config.json").read_text())
    assert saved["in_channels"] == config.model_config().controlnet.in_channels
    assert saved["_control_image"] == config.model_config().controlnet.control_image
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    assert unet_config["in_channels"] == config.model_config().unet.in_channels
    loaded = load_models(folder, preset="toy")
    assert loaded.config == config.model_config()
    assert torch.equal(loaded.controlnet.conv_in.weight, trainer.networks.controlnet.conv_in.weight)


def test_a_variant_controlnet_loads_over_the_shipped_model_from_its_own_folder(tmp_path):
    config = variant(TOY, **LATENT_CONTROLNET)
    models = build_models(config)
    folder = save_checkpoint(models, tmp_path / "weights", "diffusers", components=["controlnet"])
    loaded = load_models(controlnet=folder / "controlnet")
    assert loaded.config == config and loaded.controlnet.conv_in.weight.shape[1] == 4
    assert torch.equal(loaded.controlnet.conv_in.weight, models.controlnet.conv_in.weight)
    assert load_models(controlnet=folder / "controlnet" / "diffusion_pytorch_model.safetensors").config == config


def test_a_text_to_image_unet_trains_without_the_inpainting_channels(tmp_path):
    trainer = Trainer(tiny_run(tmp_path, stage="unet", unet_in_channels=4), distributed.single_process())
    assert trainer.networks.unet.conv_in.weight.shape[1] == 4 and trainer.networks.controlnet is None
    before = trainer.networks.unet.conv_in.weight.clone()
    loss = trainer.step(0, next(trainer.batches(0)))
    assert math.isfinite(loss) and not torch.equal(before, trainer.networks.unet.conv_in.weight)  # the U-Net trained


def test_precomputed_latents_cannot_make_the_object_control_image(tmp_path):
    with pytest.raises(ValueError, match="without --latents"):
        tiny_run(tmp_path, latents=str(tmp_path / "latents"), control_image="masked_object")


@pytest.mark.parametrize("options", [LATENT_CONTROLNET, TEXT_TO_IMAGE], ids=["latent-controlnet", "text-to-image"])
def test_the_pipeline_samples_every_variant_and_keeps_the_object_of_a_text_to_image_base(options):
    torch.manual_seed(0)
    models = build_models(variant(TOY, **options))
    image = torch.rand(3, 64, 64) * 2 - 1
    object_mask = torch.zeros(1, 64, 64)
    object_mask[:, 16:48, 16:48] = 1
    images = OutpaintPipeline(models)(image, object_mask, "a red circle", num_images=2,
                                      options=SamplingOptions(steps=2), generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()
    inside = (slice(None), slice(None), slice(20, 44), slice(20, 44))  # the object, away from the feathered edge
    kept = torch.allclose(images[inside], image[None].expand(2, -1, -1, -1)[inside], atol=1e-6)
    assert kept == (not models.config.unet.inpainting)  # pasted back only where the U-Net cannot keep it
