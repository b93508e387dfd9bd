"""--hires: the background painted again toward the photo's size in overlapping tiles (hires.py)."""
import pytest
import torch

import sample as sample_cli
import torch.nn.functional as F

from salient_outpaint.data.synthetic import render_scene, scene_generator
from salient_outpaint import hires as hires_module
from salient_outpaint import pipeline as pipeline_module
from salient_outpaint.hires import HiresOptions, keep_layout, lowpass, pass_sizes, repaint
from salient_outpaint.loading import load_models
from salient_outpaint.modules.text import encode_prompts
from salient_outpaint.options import OptionError, SamplingOptions
from salient_outpaint.photo import outpaint_photo
from salient_outpaint.pipeline import OutpaintPipeline

FAST = SamplingOptions(steps=2, guidance=3.0)


@pytest.fixture(scope="module")
def pipeline():
    return OutpaintPipeline(load_models())  # the shipped toy model: working size 64, tiles of 16 latent pixels


@pytest.mark.slow
def test_tiles_with_no_object_and_all_object_are_painted_and_the_object_is_the_photos(pipeline):
    """A 160x128 photo (2.5x the toy model's area side) whose object fills its left half: at 160x128 the
    latent map is 32x40, three by three tiles of 16, some all object, some with none. The result has the photo's
    size and its object pixels, and a background other than the bicubic path's."""
    height, width = 128, 160
    rows = torch.linspace(-1, 1, height)[:, None].expand(height, width)
    image = torch.stack([rows, rows.flip(0), rows * 0]) * 0.6
    mask = torch.zeros(1, height, width)
    mask[:, :, :70] = 1

    def paint(hires):
        return outpaint_photo(pipeline, image, mask, "a red square in front of a brick wall", options=FAST,
                              generator=torch.Generator().manual_seed(0), hires=hires)

    bicubic, refined = paint(None), paint(HiresOptions(hires_size=160, hires_strength=1.0))
    assert refined.shape == bicubic.shape == (1, 3, height, width)
    assert torch.isfinite(refined).all()
    core = (slice(None), slice(None), slice(3, height - 3), slice(3, 67))  # > 2 px inside the object's edge
    assert torch.equal(refined[core], image[None][core])
    background = (slice(None), slice(None), slice(None), slice(80, None))
    assert (refined[background] - bicubic[background]).abs().mean() > 0.02  # painted again


def test_the_tiles_add_detail_but_the_working_results_layout_and_colours_stay():
    """What the tiles paint at 64 px over a 16 px working result: a fine checker (detail, kept), a brighter
    block where one tile restarted the sky (layout, undone), and their own bright rendition of the object
    (left out: it must not bleed into the background around the object)."""
    rows = torch.linspace(-0.6, 0.2, 64)[:, None].expand(64, 64)
    upscaled = torch.stack([rows, rows, rows + 0.3])[None]  # (1, 3, 64, 64): a smooth sky
    checker = 0.1 * ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2 * 2 - 1)
    painted = upscaled + checker
    painted[..., :32, :32] += 0.3  # one tile's own idea of the sky
    mask = torch.zeros(1, 64, 64)
    mask[:, 40:56, 40:56] = 1
    painted[..., 38:58, 38:58] = 1.0  # the tiles' object and its rim, brighter than anything around
    out = keep_layout(painted, upscaled, mask, (16, 16))
    def layout_error(picture):  # against the working result's layout, at the working size
        return F.interpolate(picture, size=(16, 16), mode="area") - F.interpolate(upscaled, size=(16, 16), mode="area")

    # The block and the object gone from the layout; what is left is the lowpass's ringing at the block's edge.
    assert layout_error(out).abs().mean() < 0.1 * layout_error(painted).abs().mean()
    assert layout_error(out).abs().max() < 0.25 * 0.3
    detail = (out - lowpass(out, (16, 16)))[..., :32, 4:32]  # away from the object
    assert F.cosine_similarity(detail.flatten(), checker[:32, 4:32].expand_as(detail).flatten(), dim=0) > 0.9
    around = (slice(None), slice(None), slice(30, 38), slice(30, 64))  # the background just above the object
    assert (out - upscaled)[around].mean().abs() < 0.02


def test_a_photo_no_larger_than_the_working_size_is_not_painted_again(pipeline):
    image, mask = torch.zeros(3, 64, 64), torch.zeros(1, 64, 64)
    mask[:, 20:40, 20:40] = 1
    run = [outpaint_photo(pipeline, image, mask, "x", options=FAST, generator=torch.Generator().manual_seed(0),
                          hires=hires) for hires in (None, HiresOptions())]
    assert torch.equal(run[0], run[1])


@pytest.mark.parametrize("flags, message", [
    (["--hires-size", "100"], "--hires-size must be a positive multiple of 8, got 100"),
    (["--hires-size", "0"], "--hires-size must be a positive multiple of 8, got 0"),
    (["--hires-strength", "0"], "--hires-strength must be in (0, 1], got 0"),
    (["--hires-strength", "1.5"], "--hires-strength must be in (0, 1], got 1.5"),
    (["--hires-strength", "nan"], "--hires-strength must be in (0, 1], got nan"),
    (["--hires-prompt", " "], "--hires-prompt is empty; give a text, {prompt} standing for the photo's prompt "
                              "(default: {prompt})"),
])
def test_bad_hires_values_are_one_line_and_exit_2_before_models_load(flags, message, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sample_cli, "load_models", lambda *args, **kwargs: pytest.fail("models were loaded"))
    assert sample_cli.main(["--hires", *flags, "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]


def test_hires_options_are_checked_where_they_are_made():
    with pytest.raises(OptionError, match="hires_strength must be in"):
        HiresOptions(hires_strength=-0.1)
    with pytest.raises(OptionError, match="hires_passes must be at least 1, got 0"):
        HiresOptions(hires_passes=0)
    with pytest.raises(OptionError, match="hires_prompt is empty"):
        HiresOptions(hires_prompt="")


def test_the_tiles_are_told_the_hires_prompt_and_the_working_size_run_the_prompt(pipeline, monkeypatch):
    """--hires-prompt 'a close-up of {prompt}': the tiles' text (and only theirs) is the photo's prompt in it."""
    told = []

    def spy(who):
        def encode(text_encoder, tokenizer, prompts):
            told.append((who, list(prompts)))
            return encode_prompts(text_encoder, tokenizer, prompts)
        return encode

    monkeypatch.setattr(pipeline_module, "encode_prompts", spy("working size"))
    monkeypatch.setattr(hires_module, "encode_prompts", spy("tiles"))
    image, mask = torch.zeros(3, 128, 128), torch.zeros(1, 128, 128)
    mask[:, 40:80, 40:80] = 1
    hires = HiresOptions(hires_size=128, hires_strength=0.5, hires_prompt="a close-up of {prompt}, sharp")
    refined = outpaint_photo(pipeline, image, mask, "a red square in front of sand", negative_prompt="blurry",
                             options=FAST, generator=torch.Generator().manual_seed(0), hires=hires)
    assert refined.shape == (1, 3, 128, 128)
    assert told == [("working size", ["blurry", "a red square in front of sand"]),
                    ("tiles", ["blurry", "a close-up of a red square in front of sand, sharp"])]


def test_the_passes_enlarge_by_equal_factors_to_the_size():
    assert pass_sizes((64, 64), (256, 256), 1) == [(256, 256)]
    assert pass_sizes((64, 64), (256, 256), 2) == [(128, 128), (256, 256)]
    assert pass_sizes((512, 384), (2048, 1536), 2) == [(1024, 768), (2048, 1536)]
    assert pass_sizes((512, 384), (4096, 3072), 3) == [(1024, 768), (2048, 1536), (4096, 3072)]
    assert pass_sizes((64, 64), (64, 64), 2) == []  # not larger: nothing painted again
    assert pass_sizes((64, 48), (72, 56), 3) == [(72, 56)]  # steps too small to be multiples of 8 apart


def test_help_says_what_hires_costs(capsys):
    with pytest.raises(SystemExit):
        sample_cli.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--hires " in help_text and "more U-Net calls" in help_text and "(default: off" in help_text


def test_repaint_keeps_the_init_at_a_small_strength_and_paints_anew_at_full_strength(pipeline):
    """hires.repaint, the tiles' img2img alone (docs/measure_hires.py --denoiser gives it the true scene):
    re-noised to the last of twenty steps it returns a 128 px striped scene as its VAE round trip (what
    any latent painting of it can keep), from pure noise it paints something else."""
    scene = render_scene(128, scene_generator(0, "test", 0, 10))
    assert scene["background"] == "stripes"
    vae = pipeline.models.vae
    with torch.no_grad():
        round_trip = vae.decode(vae.encode(scene["image"][None]).mean).clamp(-1, 1)

    def change(strength):  # mean absolute difference to the round trip, in [0, 1] units
        painted = repaint(pipeline, scene["image"][None], scene["image"], scene["mask"], scene["caption"], "",
                          SamplingOptions(steps=20), strength, torch.Generator().manual_seed(0))
        assert painted.shape == (1, 3, 128, 128)
        return float((painted - round_trip).abs().mean() / 2)

    assert change(0.05) < 0.06 < 0.12 < change(1.0)
