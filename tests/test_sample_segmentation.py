"""sample.py from a bare photo: the segmenter makes the mask, the mask used is written and shown; the
sampling flags of this issue (--preset-sampling, --sampler unipc, --control-start/--control-end)."""
import pytest
from PIL import Image

import sample as sample_cli
from salient_outpaint.data.images import load_mask, save_image
from salient_outpaint.data.synthetic import ToyWorldDataset


def bare_toy_photo(folder):
    """A toy scene as an RGB photo: no alpha, a textured (not plain) backdrop, so no mask of its own."""
    scene = ToyWorldDataset(1, size=64, seed=0, split="test")[0]
    save_image(scene["image"], folder / "photo.png")
    return folder / "photo.png", scene["mask"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "error: " in err[-1], err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_a_bare_photo_is_segmented_and_the_mask_used_is_written(tmp_path, capsys):
    photo, truth = bare_toy_photo(tmp_path)
    code = sample_cli.main(["--image", str(photo), "--prompt", "a red star in front of a brick wall",
                            "--segmenter", "colour", "--mask-grow", "1", "--steps", "2", "--num-images", "1",
                            "--sampler", "unipc", "--out", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    written = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert written == ["photo_0.png", "photo_grid.png", "photo_mask.png", "settings.json"]
    used = load_mask(tmp_path / "out" / "photo_mask.png")
    assert set(used.unique().tolist()) == {0.0, 1.0}  # --mask-grow makes it binary
    assert (used.bool() & truth.bool()).sum() == truth.sum()  # the whole object, grown by a pixel
    assert used.sum() > truth.sum()
    assert Image.open(tmp_path / "out" / "photo_grid.png").width == 3 * 64 + 4 * 2  # input | mask | one output


def test_a_bare_photo_without_segmenter_weights_says_what_to_do(tmp_path, capsys):
    photo, _ = bare_toy_photo(tmp_path)
    code = sample_cli.main(["--image", str(photo), "--prompt", "x", "--out", str(tmp_path / "out")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 1 and lines[-1].startswith("error: 1 of 1 inputs failed")  # a batch goes on past one photo
    assert "ckpt_base.pth" in lines[0] and "--mask-weights" in lines[0] and "--mask" in lines[0]


@pytest.mark.parametrize("flags, named", [
    (["--control-start", "0.9", "--control-end", "0.5"], "--control-start"),
    (["--control-end", "1.5"], "--control-end"),
    (["--mask-threshold", "0"], "--mask-threshold"),
    (["--point", "3,4"], "--segmenter sam"),  # inspyrenet takes no points
])
def test_bad_values_are_one_line_naming_the_flag(tmp_path, capsys, flags, named):
    photo, _ = bare_toy_photo(tmp_path)
    code = sample_cli.main(["--image", str(photo), "--prompt", "x", "--out", str(tmp_path / "out"), *flags])
    assert code == 2 and named in error_line(capsys)


def test_a_malformed_point_names_the_flag(capsys):
    with pytest.raises(SystemExit):
        sample_cli.parse_args(["--point", "3,4,5"])
    assert "--point: expected X,Y in pixels" in capsys.readouterr().err


def test_authors_preset_and_explicit_flags_over_it():
    options = sample_cli.sampling_options(sample_cli.parse_args(["--preset-sampling", "authors"]))
    assert (options.sampler, options.steps, options.guidance, options.control_scale) == ("unipc", 20, 7.5, 1.0)
    options = sample_cli.sampling_options(sample_cli.parse_args(["--preset-sampling", "authors", "--steps", "8",
                                                                 "--control-scale", "0.5", "--control-end", "0.8"]))
    assert (options.sampler, options.steps, options.control_scale, options.control_end) == ("unipc", 8, 0.5, 0.8)
    options = sample_cli.sampling_options(sample_cli.parse_args(["--guidance", "3"]))
    assert (options.sampler, options.steps, options.guidance) == ("dpm++2m", 20, 3.0)  # no preset: the defaults
