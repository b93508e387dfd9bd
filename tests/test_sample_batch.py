"""sample.py on many photos: folders and manifests, skip what is done, go on past a bad input, fail before work."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import sample as sample_cli
from salient_outpaint import batch
from tests.conftest import save_as_stored, scene

FAST = ["--steps", "1", "--num-images", "1", "--guidance", "3"]  # the shipped toy model, one step


def cutout(path, size=(64, 48), colour=(250, 20, 20)):
    """An RGBA cut-out: the alpha channel is the mask."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((*colour, 255), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    image.save(path)
    return path


def count_calls(monkeypatch, fail_on=None):
    """Stand in for outpaint_photo (grey images; the batch logic is under test, not the model): record
    the prompt and num_images of every call; raise on call number `fail_on` (a crash)."""
    calls = []

    def counted(pipeline, image, mask, prompt, negative_prompt, num_images, *args, **kwargs):
        calls.append((prompt, num_images))
        if len(calls) == fail_on:
            raise RuntimeError("out of memory (simulated)")
        return torch.zeros(num_images, *image.shape)

    monkeypatch.setattr(batch, "outpaint_photo", counted)
    return calls


def names(folder):
    """The images in `folder` (not its settings record)."""
    return sorted(path.name for path in folder.iterdir() if path.name != "settings.json")


def test_a_folder_with_a_damaged_photo_writes_the_others_and_exits_non_zero(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    cutout(photos / "a.png")
    (photos / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    cutout(photos / "c.png", colour=(20, 20, 250))
    code = sample_cli.main(["--image", str(photos), "--prompt", "a red star", *FAST, "--out", str(tmp_path / "out")])
    assert code == 1
    assert names(tmp_path / "out") == ["a_0.png", "a_grid.png", "c_0.png", "c_grid.png"]
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "b.jpg" in line and "cannot read the image" in line]
    assert err.strip().splitlines()[-1] == "error: 1 of 3 inputs failed (see above): b"


def test_a_rerun_skips_the_inputs_that_are_done(tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b", "c"):
        cutout(photos / f"{name}.png")
    arguments = ["--image", str(photos), "--prompt", "a red star", *FAST, "--out", str(tmp_path / "out")]
    calls = count_calls(monkeypatch)
    assert sample_cli.main(arguments) == 0 and len(calls) == 3
    (tmp_path / "out" / "b_grid.png").unlink()  # b was interrupted before its grid
    assert sample_cli.main(arguments) == 0 and len(calls) == 4
    assert "2 already done, skipped" in capsys.readouterr().out
    assert sample_cli.main([*arguments, "--overwrite"]) == 0 and len(calls) == 7


def test_images_are_written_in_micro_batches_as_soon_as_they_exist(tmp_path, monkeypatch):
    image = cutout(tmp_path / "object.png")
    arguments = ["--image", str(image), "--prompt", "a red star", "--steps", "1", "--num-images", "5",
                 "--batch-size", "2", "--out", str(tmp_path / "out")]
    calls = count_calls(monkeypatch, fail_on=3)
    with pytest.raises(RuntimeError, match="simulated"):  # a crash in the third micro-batch
        sample_cli.main(arguments)
    assert names(tmp_path / "out") == ["object_0.png", "object_1.png", "object_2.png", "object_3.png"]
    calls = count_calls(monkeypatch)
    assert sample_cli.main(arguments) == 0  # the unfinished input is done again, whole
    assert [count for _, count in calls] == [2, 2, 1]
    assert names(tmp_path / "out") == [f"object_{k}.png" for k in range(5)] + ["object_grid.png"]


def test_a_manifest_gives_each_photo_its_mask_and_prompt_and_names_the_outputs(tmp_path, monkeypatch):
    lines = []
    for index, (width, height) in enumerate([(64, 48), (40, 56)]):
        Image.new("RGB", (width, height), (30, 90, 200)).save(tmp_path / f"{index}.jpg")
        mask = Image.new("L", (width, height), 0)
        mask.paste(255, (8, 8, 24, 24))
        mask.save(tmp_path / f"{index}_mask.png")
        lines.append(json.dumps({"id": f"shot{index}", "image": f"{index}.jpg", "mask": f"{index}_mask.png",
                                 "prompt": f"prompt {index}"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    calls = count_calls(monkeypatch)
    assert sample_cli.main(["--inputs", str(tmp_path / "manifest.jsonl"), *FAST, "--out", str(tmp_path / "out")]) == 0
    assert [prompt for prompt, _ in calls] == ["prompt 0", "prompt 1"]
    assert names(tmp_path / "out") == ["shot0_0.png", "shot0_grid.png", "shot1_0.png", "shot1_grid.png"]
    assert Image.open(tmp_path / "out" / "shot1_0.png").size == (40, 56)


def test_a_folder_of_masks_is_matched_by_name(tmp_path, monkeypatch, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "masks").mkdir()
    for name, box in (("left", (4, 4, 20, 20)), ("right", (40, 20, 60, 40))):
        Image.new("RGB", (64, 48), (30, 90, 200)).save(tmp_path / "photos" / f"{name}.jpg")
        mask = Image.new("L", (64, 48), 0)
        mask.paste(255, box)
        mask.save(tmp_path / "masks" / f"{name}.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "photos" / "maskless.jpg")
    masks = []
    monkeypatch.setattr(batch, "outpaint_photo", lambda pipeline, image, mask, *args, **kwargs: masks.append(mask) or
                        torch.zeros(1, *image.shape))
    assert sample_cli.main(["--image", str(tmp_path / "photos"), "--mask", str(tmp_path / "masks"), "--prompt", "x",
                            *FAST, "--out", str(tmp_path / "out")]) == 1  # maskless.jpg has no mask
    assert masks[0][0, 10, 10] == 1 and masks[1][0, 30, 50] == 1 and masks[1][0, 10, 10] == 0
    assert "maskless.png does not exist" in capsys.readouterr().err


def test_a_rotated_phone_photo_comes_out_upright_at_its_full_size(tmp_path):
    shown, shown_mask = scene(width=480, height=360)
    save_as_stored(shown, tmp_path / "phone.jpg", 6, quality=95)
    save_as_stored(shown_mask, tmp_path / "phone_mask.png", 6)
    assert sample_cli.main(["--image", str(tmp_path / "phone.jpg"), "--mask", str(tmp_path / "phone_mask.png"),
                            "--prompt", "a red star", *FAST, "--out", str(tmp_path / "out")]) == 0
    result = torch.from_numpy(np.asarray(Image.open(tmp_path / "out" / "phone_0.png")).copy())
    assert tuple(result.shape) == (360, 480, 3)  # upright: the stored JPEG is 360 wide and 480 high
    photo = torch.from_numpy(np.asarray(Image.open(tmp_path / "phone.jpg").transpose(
        Image.Transpose.ROTATE_270)).copy())
    # Deep inside the object (the feather is 2 * 360 / 56 = 13 px), the photo's own pixels, byte for byte.
    core = (slice(360 // 8 + 14, 360 // 2 - 14), slice(480 // 8 + 14, 480 // 2 - 14))
    assert torch.equal(result[core], photo[core])


@pytest.fixture
def models_must_not_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("models were loaded although the command was bound to fail")

    monkeypatch.setattr(sample_cli, "load_models", refuse)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_out_on_a_file_fails_before_any_model_loads(tmp_path, capsys, models_must_not_load):
    (tmp_path / "taken").write_text("a file")
    assert sample_cli.main(["--out", str(tmp_path / "taken")]) == 2
    line = one_error_line(capsys)
    assert "--out" in line and "is a file" in line
    assert sample_cli.main(["--out", str(tmp_path / "taken" / "below")]) == 2
    assert "--out" in one_error_line(capsys)


@pytest.mark.parametrize("flags, message", [
    (["--num-images", "0"], "--num-images must be at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--steps", "0"], "--steps must be at least 1, got 0"),
    (["--steps", "1000"], "--steps must be at most 999, got 1000"),
    (["--seed", "-1"], "--seed must be in [0, 2**63 - 1], got -1"),
    (["--seed", str(2**63)], f"--seed must be in [0, 2**63 - 1], got {2**63}"),
    (["--guidance", "-1"], "--guidance must not be negative, got -1.0"),
    (["--control-scale", "-0.5"], "--control-scale must not be negative, got -0.5"),
    (["--guidance", "nan"], "--guidance must be a finite number >= 0, got nan"),
    (["--eta", "-1"], "--eta must not be negative, got -1.0"),
    (["--control-start", "0.9", "--control-end", "0.1"], "--control-start 0.9 and --control-end 0.1 must satisfy"),
    (["--resolution", "100"], "--resolution must be a multiple of 8 from 8 to 2048, got 100"),
    (["--resolution", "0"], "--resolution must be a multiple of 8 from 8 to 2048, got 0"),
    (["--device", "banana"], "--device banana is not a device"),
    pytest.param(["--device", "cuda"], "--device cuda: no CUDA GPU is available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["--inputs", "manifest.jsonl", "--prompt", "x"], "--inputs gives every image, mask and prompt"),
])
def test_a_flag_out_of_range_is_one_line_before_any_work(tmp_path, capsys, models_must_not_load, flags, message):
    assert sample_cli.main([*flags, "--out", str(tmp_path / "out")]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_an_empty_folder_or_two_photos_of_one_name_fail_before_any_model_loads(tmp_path, capsys,
                                                                               models_must_not_load):
    (tmp_path / "photos").mkdir()
    arguments = ["--image", str(tmp_path / "photos"), "--prompt", "x", "--out", str(tmp_path / "out")]
    assert sample_cli.main(arguments) == 2 and "holds no images" in one_error_line(capsys)
    cutout(tmp_path / "photos" / "shoe.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "shoe.jpg")
    assert sample_cli.main(arguments) == 2 and "would both write shoe_0.png" in one_error_line(capsys)
