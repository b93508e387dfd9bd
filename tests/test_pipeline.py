"""OutpaintPipeline and sample.py on random TOY weights: determinism, the SI2 baseline, bad input."""
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import sample as sample_cli
from salient_outpaint.checkpoints import save_checkpoint
from salient_outpaint.conditioning import binary_paint_mask, paint_mask_from_object
from salient_outpaint.config import TOY
from salient_outpaint.data.masks import binarize
from salient_outpaint.modules import build_models
from salient_outpaint.inputs import InputError
from salient_outpaint.options import OptionError, SamplingOptions
from salient_outpaint.pipeline import OutpaintPipeline, controlnet_steps

FAST = SamplingOptions(steps=3, guidance=3.0)


def perturbed_models(with_controlnet=True):
    """Random TOY models whose ControlNet really acts: its zero convolutions are shifted off zero."""
    torch.manual_seed(0)
    models = build_models(TOY, with_controlnet=with_controlnet)
    if with_controlnet:
        with torch.no_grad():
            for parameter in models.controlnet.parameters():
                parameter.add_(0.02 * torch.randn_like(parameter))
    return models


@pytest.fixture(scope="module")
def pipeline():
    return OutpaintPipeline(perturbed_models())


def scene(height=64, width=64):
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, height, width)
    mask[:, height // 4: height // 2, width // 4: width // 2] = 1
    return image, mask


def run(pipeline, options=FAST, seed=0, **kwargs):
    image, mask = kwargs.pop("inputs", scene())
    return pipeline(image, mask, "a red star in front of a brick wall", num_images=2, options=options,
                    generator=torch.Generator().manual_seed(seed), **kwargs)


@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "unipc"])
def test_same_seed_same_images_other_seed_other_images(pipeline, sampler):
    options = SamplingOptions(steps=3, guidance=3.0, sampler=sampler)
    first, again, other = run(pipeline, options, 1), run(pipeline, options, 1), run(pipeline, options, 2)
    assert first.shape == (2, 3, 64, 64)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_control_scale_zero_is_the_si2_baseline(pipeline):
    models = pipeline.models
    baseline = OutpaintPipeline(type(models)(config=models.config, vae=models.vae, unet=models.unet,
                                             text_encoder=models.text_encoder, controlnet=None))
    without_control = run(pipeline, SamplingOptions(steps=3, guidance=3.0, control_scale=0.0))
    assert torch.equal(without_control, run(baseline))
    assert not torch.allclose(without_control, run(pipeline))  # the ControlNet does act at scale 1


def test_any_size_is_padded_and_restored(pipeline):
    images = run(pipeline, inputs=scene(50, 70))
    assert images.shape == (2, 3, 50, 70)


def test_paste_back_keeps_the_object_pixels_exactly(pipeline):
    image, mask = scene()
    images = run(pipeline, SamplingOptions(steps=2, guidance=3.0, paste_back=True, feather=2), inputs=(image, mask))
    inner = torch.zeros_like(mask, dtype=torch.bool)
    inner[:, 64 // 4 + 2: 64 // 2 - 2, 64 // 4 + 2: 64 // 2 - 2] = True  # 2 px inside the object's edge
    assert torch.equal(images[0][:, inner[0]], image[:, inner[0]])
    assert not torch.equal(images[0][:, ~mask[0].bool()], image[:, ~mask[0].bool()])


@pytest.mark.parametrize("mask_value, message", [(0.0, "empty"), (1.0, "whole image")])
def test_masks_that_leave_nothing_to_do_are_refused(pipeline, mask_value, message):
    image, _ = scene()
    with pytest.raises(InputError, match=message):
        pipeline(image, torch.full((1, 64, 64), mask_value), "a prompt", options=FAST)


def test_mask_of_another_size_is_refused(pipeline):
    image, _ = scene()
    with pytest.raises(InputError, match=r"the mask is 32x32 \(width x height\) but the image is 64x64"):
        pipeline(image, torch.ones(1, 32, 32), "a prompt", options=FAST)


def test_soft_mask_is_binarised_for_the_unet_and_kept_soft_for_the_controlnet(pipeline):
    """A soft map with the same 0.5 contour as the binary mask: the U-Net reads the same mask, so without
    the ControlNet the images are equal; the ControlNet reads the soft values, so with it they differ."""
    image, mask = scene()
    soft = 0.1 + 0.8 * mask  # 0.9 on the object, 0.1 around it
    si2 = SamplingOptions(steps=3, guidance=3.0, control_scale=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # soft masks are meant: no warning
        assert torch.equal(run(pipeline, si2, inputs=(image, soft)), run(pipeline, si2, inputs=(image, mask)))
        assert not torch.allclose(run(pipeline, inputs=(image, soft)), run(pipeline, inputs=(image, mask)))


def test_the_object_cut_is_exactly_what_the_unet_keeps():
    """binarize (object where the mask is above 0.5) is the complement of the U-Net's reading of the
    paint mask 1 - object_mask (paint where >= 0.5) for every value: all the 16-bit floats in [0, 1],
    and 0.5 with 100 float32 / float64 neighbours on each side (1 - m is exact for m >= 0.5, and rounds
    to at least 0.5 for m below it, so the two cuts meet exactly)."""
    candidates = [torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int16).view(dtype) for dtype in (torch.float16,
                                                                                             torch.bfloat16)]
    for dtype in (torch.float32, torch.float64):
        half, neighbours = torch.tensor(0.5, dtype=dtype), []
        for towards in (0.0, 1.0):
            value = half
            for _ in range(100):
                value = torch.nextafter(value, torch.tensor(towards, dtype=dtype))
                neighbours.append(value)
        candidates.append(torch.stack([half, *neighbours]))
    for values in candidates:
        values = values[(values >= 0) & (values <= 1)]
        kept = 1 - binary_paint_mask(paint_mask_from_object(values))
        assert torch.equal(binarize(values), kept.float()), values.dtype
    assert binarize(torch.tensor([0.5, 0.5001])).tolist() == [0.0, 1.0]


def test_mask_values_outside_0_1_are_refused(pipeline):
    image, mask = scene()
    with pytest.raises(InputError, match=r"expected \[0, 1\]"):
        pipeline(image, mask * 255, "a prompt", options=FAST)


def test_a_resize_overshoot_of_the_mask_range_is_clamped(pipeline):
    """An antialiased resize (photo.py) leaves values a rounding past 0 and 1: read as 0 and 1."""
    image, mask = scene()
    overshoot = mask * (1 + 1e-6) - 1e-6 * (1 - mask)
    assert torch.equal(run(pipeline, inputs=(image, overshoot)), run(pipeline, inputs=(image, mask)))


def test_controlnet_steps_follow_the_authors_rule():
    """By the position of each timestep in the run, whatever the timesteps are."""
    def run_of(steps):
        return list(range(999, 0, -(999 // steps)))[:steps]

    assert controlnet_steps(run_of(10), 0.2, 0.8) == [False] * 2 + [True] * 6 + [False] * 2
    assert controlnet_steps(run_of(8), 0.2, 0.8) == [False] * 2 + [True] * 4 + [False] * 2  # 2/8 < 0.2 is false; 7/8 > 0.8
    assert controlnet_steps(run_of(3), 0.0, 1.0) == [True] * 3
    assert controlnet_steps(run_of(3), 0.5, 0.6) == [False] * 3  # a window narrower than a step holds none


def test_controlnet_window_of_no_step_is_the_si2_baseline_and_a_full_window_the_default(pipeline):
    empty_window = SamplingOptions(steps=3, guidance=3.0, control_start=0.5, control_end=0.6)
    assert torch.equal(run(pipeline, empty_window), run(pipeline, SamplingOptions(steps=3, guidance=3.0,
                                                                                 control_scale=0.0)))
    first_step = SamplingOptions(steps=3, guidance=3.0, control_end=0.34)
    assert not torch.allclose(run(pipeline, first_step), run(pipeline, empty_window))
    assert not torch.allclose(run(pipeline, first_step), run(pipeline))


@pytest.mark.parametrize("start, end", [(0.5, 0.5), (0.8, 0.2), (-0.1, 1.0), (0.0, 1.5)])
def test_impossible_controlnet_windows_are_refused(start, end):
    with pytest.raises(InputError, match="0 <= start < end <= 1"):
        SamplingOptions(steps=3, control_start=start, control_end=end)


@pytest.mark.parametrize("options, message, flagged", [
    (dict(steps=0), "steps must be at least 1, got 0 (1 to 999)", "--steps must be at least 1, got 0"),
    (dict(sampler="x"), "unknown sampler 'x'; choose one of ddim, dpm++2m, unipc", "unknown --sampler 'x'"),
    (dict(control_start=0.9, control_end=0.1), "control_start 0.9 and control_end 0.1 must satisfy 0 <= start < end",
     "--control-start 0.9 and --control-end 0.1 must satisfy"),
    (dict(guidance=float("nan")), "guidance must be a finite number >= 0, got nan",
     "--guidance must be a finite number >= 0, got nan"),
    (dict(control_scale=float("inf")), "control_scale must be a finite number >= 0, got inf",
     "--control-scale must be a finite number"),
    (dict(eta=-0.5), "eta must not be negative, got -0.5", "--eta must not be negative"),
])
def test_options_out_of_range_are_one_sentence_naming_the_field_value_and_range(options, message, flagged):
    """Said with the field's name; a command line says it with its flag's."""
    with pytest.raises(OptionError) as refused:
        SamplingOptions(**options)
    assert isinstance(refused.value, InputError)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value) and ". " not in str(refused.value)
    assert refused.value.with_flags().startswith(flagged)


def test_too_long_prompt_is_truncated_with_a_warning(pipeline):
    image, mask = scene()
    with pytest.warns(UserWarning, match="truncat"):
        pipeline(image, mask, "brick " * 200, options=FAST)


# sample.py: every error is one line on stderr and exit code 2.

@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy_weights")
    save_checkpoint(perturbed_models(), folder, "diffusers")
    return folder


def write_inputs(folder: Path, image_size=(64, 64), mask_size=(64, 64)):
    Image.new("RGB", image_size, (20, 120, 200)).save(folder / "object.png")
    mask = Image.new("L", mask_size, 0)
    mask.paste(255, (16, 16, 40, 40))
    mask.save(folder / "mask.png")
    return folder / "object.png", folder / "mask.png"


def cli(folder, toy_folder, *extra):
    image, mask = write_inputs(folder)
    return sample_cli.main(["--image", str(image), "--mask", str(mask), "--prompt", "a red star", "--steps", "2",
                            "--num-images", "2", "--out", str(folder / "out"), "--checkpoint", str(toy_folder),
                            "--preset", "toy", *extra])


def test_sample_cli_writes_images_and_a_grid(tmp_path, toy_folder):
    assert cli(tmp_path, toy_folder) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["object_0.png", "object_1.png", "object_grid.png",
                                                                    "settings.json"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def failure_lines(capsys) -> str:
    """An input that fails is reported on its own line, and the batch ends with a count of the failures."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: 1 of 1 inputs failed")
    return "\n".join(line for line in err.splitlines() if line.startswith("error: "))


def test_sample_cli_missing_image(tmp_path, toy_folder, capsys):
    code = sample_cli.main(["--image", str(tmp_path / "nope.png"), "--prompt", "x", "--checkpoint", str(toy_folder),
                            "--preset", "toy", "--out", str(tmp_path / "out")])
    assert code == 2 and "does not exist" in error_line(capsys)


def test_sample_cli_unreadable_image(tmp_path, toy_folder, capsys):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    code = sample_cli.main(["--image", str(tmp_path / "broken.png"), "--mask", str(tmp_path / "broken.png"),
                            "--prompt", "x", "--checkpoint", str(toy_folder), "--preset", "toy",
                            "--out", str(tmp_path / "out")])
    assert code == 1 and "cannot read the image" in failure_lines(capsys)


def test_sample_cli_mask_of_another_size(tmp_path, toy_folder, capsys):
    image, _ = write_inputs(tmp_path)
    (tmp_path / "small").mkdir()
    _, mask = write_inputs(tmp_path / "small", image_size=(32, 32), mask_size=(32, 32))
    code = sample_cli.main(["--image", str(image), "--mask", str(mask), "--prompt", "x", "--checkpoint",
                            str(toy_folder), "--preset", "toy", "--out", str(tmp_path / "out")])
    assert code == 1 and "give a mask of the image's size" in failure_lines(capsys)


def test_sample_cli_rgb_without_mask_or_plain_backdrop(tmp_path, toy_folder, capsys):
    noisy = Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy())
    noisy.save(tmp_path / "photo.png")
    code = sample_cli.main(["--image", str(tmp_path / "photo.png"), "--prompt", "x", "--checkpoint", str(toy_folder),
                            "--preset", "toy", "--out", str(tmp_path / "out")])
    assert code == 1 and "--mask" in failure_lines(capsys)


def test_sample_cli_missing_prompt(tmp_path, toy_folder, capsys):
    image, mask = write_inputs(tmp_path)
    code = sample_cli.main(["--image", str(image), "--mask", str(mask), "--checkpoint", str(toy_folder),
                            "--out", str(tmp_path / "out")])
    assert code == 2 and "--prompt" in error_line(capsys)


def test_sample_cli_checkpoint_of_the_wrong_kind(tmp_path, capsys):
    """A text-to-image U-Net (4 input channels) where the 9-channel inpainting one is expected."""
    torch.manual_seed(0)
    models = build_models(TOY)
    wrong = save_checkpoint(models, tmp_path / "weights", "diffusers")
    from safetensors.torch import load_file, save_file
    unet_file = wrong / "unet" / "diffusion_pytorch_model.safetensors"
    weights = load_file(unet_file)
    weights["conv_in.weight"] = weights["conv_in.weight"][:, :4].contiguous()
    save_file(weights, unet_file)
    image, mask = write_inputs(tmp_path)
    code = sample_cli.main(["--image", str(image), "--mask", str(mask), "--prompt", "x", "--checkpoint", str(wrong),
                            "--preset", "toy", "--out", str(tmp_path / "out")])
    assert code == 2 and "text-to-image" in error_line(capsys)


def test_sample_cli_without_controlnet_weights_says_what_to_pass(tmp_path, capsys):
    torch.manual_seed(0)
    folder = save_checkpoint(build_models(TOY, with_controlnet=False), tmp_path / "weights", "diffusers")
    image, mask = write_inputs(tmp_path)
    code = sample_cli.main(["--image", str(image), "--mask", str(mask), "--prompt", "x", "--checkpoint", str(folder),
                            "--preset", "toy", "--out", str(tmp_path / "out")])
    assert code == 2 and "--no-controlnet" in error_line(capsys)


def test_sample_cli_takes_soft_masks_without_a_warning(tmp_path, toy_folder, capsys):
    image, _ = write_inputs(tmp_path)
    soft = Image.new("L", (64, 64), 0)
    soft.paste(200, (16, 16, 40, 40))
    soft.save(tmp_path / "soft.png")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        code = sample_cli.main(["--image", str(image), "--mask", str(tmp_path / "soft.png"), "--prompt", "x",
                                "--steps", "1", "--num-images", "1", "--checkpoint", str(toy_folder), "--preset",
                                "toy", "--out", str(tmp_path / "out")])
    assert code == 0
    assert "warning" not in capsys.readouterr().err


def test_sample_cli_reads_the_mask_from_alpha_or_a_plain_backdrop(tmp_path, toy_folder):
    from salient_outpaint.data.images import load_rgba_as_image_and_mask

    cutout = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    cutout.paste((250, 20, 20, 255), (10, 10, 30, 30))
    cutout.save(tmp_path / "cutout.png")
    on_white = Image.new("RGB", (64, 48), (255, 255, 255))
    on_white.paste((250, 20, 20), (10, 10, 30, 30))
    on_white.save(tmp_path / "on_white.png")
    for name in ("cutout.png", "on_white.png"):
        image, mask = load_rgba_as_image_and_mask(tmp_path / name)
        assert image.shape == (3, 48, 64) and mask.sum() == 20 * 20
        assert sample_cli.main(["--image", str(tmp_path / name), "--prompt", "a red square", "--steps", "1",
                                "--num-images", "1", "--checkpoint", str(toy_folder), "--preset", "toy",
                                "--out", str(tmp_path / name.split(".")[0])]) == 0
        stem = name.split(".")[0]
        assert Image.open(tmp_path / stem / f"{stem}_0.png").size == (64, 48)
