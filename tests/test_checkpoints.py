"""The checkpoint layer: round trips, EMA, strict errors, detection of the wrong model."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from salient_outpaint.checkpoints import CheckpointError, load_checkpoint, read_state_dict, save_checkpoint
from salient_outpaint.checkpoints.diffusers import controlnet_config_json
from salient_outpaint.checkpoints.loader import LAYOUTS, ldm_maps
from salient_outpaint.config import SD2_INPAINT, TOY
from salient_outpaint.modules import build_models
from tests.fixtures.planted import PlantedCode
from tests.fixtures.tiny_config import TINY

FIXTURES = Path(__file__).parent / "fixtures"


def randomised_models(config, seed):
    torch.manual_seed(seed)
    models = build_models(config)
    with torch.no_grad():  # also move the zero convs, so a dropped key cannot go unnoticed
        for module in models.components().values():
            for parameter in module.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
    return models


def assert_same_weights(a, b, components):
    for name in components:
        ours, theirs = a.components()[name].state_dict(), b.components()[name].state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{name}.{key} changed in the round trip"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_save_then_load_gives_identical_tensors(layout, tmp_path):
    source, target = randomised_models(TOY, 0), randomised_models(TOY, 1)
    destination = tmp_path / ("folder" if layout == "diffusers" else "weights.safetensors")
    save_checkpoint(source, destination, layout)
    loaded = load_checkpoint(destination, target)
    expected = ["controlnet"] if layout == "cldm" else ["unet", "vae", "text_encoder", "controlnet"]
    assert sorted(loaded) == sorted(expected)
    assert_same_weights(source, target, expected)


def test_cldm_file_without_prefix_loads(tmp_path):
    """Some ControlNet files strip lllyasviel's `control_model.` prefix."""
    source, target = randomised_models(TINY, 0), randomised_models(TINY, 1)
    save_checkpoint(source, tmp_path / "c.safetensors", "cldm")
    stripped = {key.removeprefix("control_model."): value
                for key, value in read_state_dict(tmp_path / "c.safetensors").items()}
    save_file(stripped, str(tmp_path / "stripped.safetensors"))
    assert load_checkpoint(tmp_path / "stripped.safetensors", target) == ["controlnet"]
    assert_same_weights(source, target, ["controlnet"])


def test_pickled_lightning_checkpoint_loads_with_weights_only(tmp_path):
    source, target = randomised_models(TINY, 0), randomised_models(TINY, 1)
    save_checkpoint(source, tmp_path / "m.safetensors", "ldm")
    torch.save({"state_dict": read_state_dict(tmp_path / "m.safetensors"), "global_step": 5}, tmp_path / "m.ckpt")
    load_checkpoint(tmp_path / "m.ckpt", target)
    assert_same_weights(source, target, ["unet", "vae", "text_encoder", "controlnet"])


def test_a_pickle_that_needs_code_is_refused_in_one_line_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {"weight": torch.zeros(1)}, "callback": PlantedCode(marker)}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "m.ckpt", build_models(TINY))
    message = str(refused.value)
    assert not marker.exists()
    assert "cannot be loaded safely" in message and ".safetensors" in message and "\n" not in message
    assert "weights_only" not in message  # never the advice to unpickle it anyway


def test_ema_weights_are_used_when_present(tmp_path):
    ldm = read_state_dict(FIXTURES / "tiny_ldm.safetensors")
    ema = {"model_ema." + key[len("model."):].replace(".", ""): value + 1.0
           for key, value in ldm.items() if key.startswith("model.diffusion_model.")}
    save_file({**ldm, **ema, "model_ema.decay": torch.tensor(0.999)}, str(tmp_path / "ema.safetensors"))

    with_ema, without_ema = build_models(TINY), build_models(TINY)
    load_checkpoint(tmp_path / "ema.safetensors", with_ema)
    load_checkpoint(tmp_path / "ema.safetensors", without_ema, prefer_ema=False)
    key_map = ldm_maps(with_ema)["unet"]
    for key, source in key_map.sources.items():
        ldm_key = source.key
        assert torch.equal(with_ema.unet.state_dict()[key], ldm[ldm_key] + 1.0)
        assert torch.equal(without_ema.unet.state_dict()[key], ldm[ldm_key])


def edited_ldm(tmp_path, edit):
    ldm = read_state_dict(FIXTURES / "tiny_ldm.safetensors")
    edit(ldm)
    save_file(ldm, str(tmp_path / "edited.safetensors"))
    return tmp_path / "edited.safetensors"


def test_missing_key_is_named_with_the_detected_format(tmp_path):
    path = edited_ldm(tmp_path, lambda sd: sd.pop("model.diffusion_model.output_blocks.5.2.conv.weight"))
    with pytest.raises(CheckpointError, match=r"ldm single-file.*1 missing keys.*output_blocks\.5\.2\.conv\.weight"):
        load_checkpoint(path, build_models(TINY))


def test_unexpected_key_is_named(tmp_path):
    path = edited_ldm(tmp_path, lambda sd: sd.update({"first_stage_model.encoder.extra.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"the vae .*1 unexpected keys.*encoder\.extra\.weight"):
        load_checkpoint(path, build_models(TINY))


def test_shape_mismatch_is_named(tmp_path):
    key = "first_stage_model.decoder.conv_out.bias"
    path = edited_ldm(tmp_path, lambda sd: sd.update({key: torch.zeros(5)}))
    with pytest.raises(CheckpointError, match=r"1 shape mismatches.*decoder\.conv_out\.bias \(ours \(3,\), file \(5,\)\)"):
        load_checkpoint(path, build_models(TINY))


def test_text_to_image_unet_is_named_as_the_wrong_model(tmp_path):
    """A plain SD2 U-Net reads 4 channels, not the 9 of the inpainting one."""
    def to_text_to_image(sd):
        key = "model.diffusion_model.input_blocks.0.0.weight"
        sd[key] = sd[key][:, :4].contiguous()
    path = edited_ldm(tmp_path, to_text_to_image)
    with pytest.raises(CheckpointError, match=r"text-to-image unet \(conv_in reads 4 channels\).*9-channel inpainting"):
        load_checkpoint(path, build_models(TINY))


@pytest.mark.parametrize("content, message", [
    (None, "checkpoint file not found"),
    (b"not a safetensors file", "not a readable .safetensors file"),
])
def test_unreadable_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "weights.safetensors"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, build_models(TINY))


def test_keys_of_no_known_layout_are_refused(tmp_path):
    save_file({"some.other.model.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="cannot tell what this checkpoint holds"):
        load_checkpoint(tmp_path / "other.safetensors", build_models(TINY))


def test_sd2_ldm_key_map_names_the_real_checkpoint_keys():
    """Spot checks against key names and shapes of the released 512-inpainting-ema checkpoint."""
    with torch.device("meta"):
        models = build_models(SD2_INPAINT)
    foreign = {}
    for name, key_map in ldm_maps(models).items():
        ours = models.components()[name].state_dict()
        for our_key, source in key_map.sources.items():
            rows, *rest = ours[our_key].shape
            foreign[source.key] = (rows * source.parts, *rest) + ((1, 1) if source.conv1x1 else ())
    assert foreign["model.diffusion_model.input_blocks.0.0.weight"] == (320, 9, 3, 3)
    assert foreign["model.diffusion_model.input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert foreign["model.diffusion_model.input_blocks.11.0.in_layers.2.weight"] == (1280, 1280, 3, 3)
    assert foreign["model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"] == (1280, 1024)
    assert foreign["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert foreign["model.diffusion_model.output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert foreign["model.diffusion_model.output_blocks.11.0.skip_connection.weight"] == (320, 640, 1, 1)
    assert foreign["model.diffusion_model.out.2.weight"] == (4, 320, 3, 3)
    assert foreign["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    assert foreign["first_stage_model.decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert foreign["first_stage_model.decoder.up.0.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert foreign["cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"] == (3072, 1024)
    assert foreign["control_model.input_hint_block.14.weight"] == (320, 256, 3, 3)
    assert foreign["control_model.zero_convs.11.0.weight"] == (1280, 1280, 1, 1)
    assert foreign["control_model.middle_block_out.0.weight"] == (1280, 1280, 1, 1)
    assert sum(key.startswith("model.diffusion_model.") for key in foreign) == 686


def test_controlnet_config_matches_the_authors_release():
    """yahoo-inc/photo-background-generation's controlnet/config.json: 9 input channels, a
    3-channel control image, embedding channels [16, 32, 96, 256], SD2's heads and widths."""
    config = controlnet_config_json(SD2_INPAINT)
    assert config["in_channels"] == 9 and config["conditioning_channels"] == 3
    assert config["conditioning_embedding_out_channels"] == [16, 32, 96, 256]
    assert config["attention_head_dim"] == [5, 10, 20, 20] and config["cross_attention_dim"] == 1024
    assert config["use_linear_projection"] is True
