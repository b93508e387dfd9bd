"""evaluate.py: expansion from folders of generated images, set and CLIP metrics, the generate mode, errors."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import evaluate as evaluate_cli
from salient_outpaint.checkpoints import save_checkpoint
from salient_outpaint.config import TOY
from salient_outpaint.data.images import load_image as load_image_file
from salient_outpaint.data.images import load_mask, mask_as_image, save_image
from salient_outpaint.data.manifest import read_manifest
from salient_outpaint.data.masks import dilate
from salient_outpaint.evaluation import clip_score, fid_inception, lpips, run
from salient_outpaint.modules import build_models
from salient_outpaint.options import SamplingOptions
from tests.fixtures.planted import PlantedCode

SIZE = 32
RED = torch.tensor([0.9, -0.9, -0.9])[:, None]


def make_inputs(folder: Path, count=3) -> Path:
    """Red 10x10 squares on grey; the category alternates so that the summary has two groups."""
    lines = []
    for index in range(count):
        image = torch.full((3, SIZE, SIZE), -0.2)
        mask = torch.zeros(1, SIZE, SIZE)
        mask[:, 10:20, 8 + index: 18 + index] = 1
        image[:, mask[0].bool()] = RED
        save_image(image, folder / f"{index}.png")
        save_image(mask_as_image(mask), folder / f"{index}_mask.png")
        lines.append(json.dumps({"id": str(index), "image": f"{index}.png", "mask": f"{index}_mask.png",
                                 "prompt": "a red square", "category": "even" if index % 2 == 0 else "odd"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def make_generated(manifest: Path, out: Path, grow: int, samples=2) -> Path:
    """'Generated' images: a new blue background, the red object grown by `grow` pixels on every side."""
    out.mkdir()
    for line in manifest.read_text().splitlines():
        entry = json.loads(line)
        grown_mask = dilate(load_mask(manifest.parent / entry["mask"]), grow)[0].bool()
        for sample in range(samples):
            image = torch.zeros(3, SIZE, SIZE)
            image[2] = 0.8
            image[:, grown_mask] = RED
            save_image(image, out / f"{entry['id']}_{sample}.png")
    return out


def evaluate_folders(tmp_path, *extra) -> dict:
    manifest = make_inputs(tmp_path)
    kept = make_generated(manifest, tmp_path / "kept", grow=0)
    grown = make_generated(manifest, tmp_path / "grown", grow=2)
    assert evaluate_cli.main(["--inputs", str(manifest), "--generated", f"kept={kept}", f"grown={grown}",
                              "--segmenter", "colour", "--out", str(tmp_path / "report"), *extra]) == 0
    return json.loads((tmp_path / "report" / "report.json").read_text())


def test_expansion_is_zero_for_kept_objects_and_measured_for_grown_ones(tmp_path, capsys):
    report = evaluate_folders(tmp_path)
    methods = report["summary"]["methods"]
    assert methods["kept"]["count"] == 6 and methods["grown"]["count"] == 6
    assert methods["kept"]["metrics"]["expansion_fraction"]["mean"] == 0
    assert methods["kept"]["metrics"]["expansion_ratio"]["median"] == 0
    # a 10x10 square grown by 2 px on every side: 14x14 - 10x10 = 96 pixels, of a 32x32 image, 0.96 of the object
    assert methods["grown"]["metrics"]["expanded_pixels"]["mean"] == 96
    assert methods["grown"]["metrics"]["expansion_fraction"]["mean"] == pytest.approx(96 / SIZE ** 2)
    assert methods["grown"]["metrics"]["expansion_ratio"]["mean"] == pytest.approx(0.96)
    # inputs 0 and 2 are "even", 1 is "odd", 2 samples each
    per_category = methods["grown"]["per_category"]
    assert per_category["even"]["expansion_ratio"]["count"] == 4
    assert per_category["odd"]["expansion_ratio"] == {"mean": pytest.approx(0.96), "median": pytest.approx(0.96),
                                                      "count": 2}
    assert len(report["records"]) == 12 and {r["method"] for r in report["records"]} == {"kept", "grown"}
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| grown | 6 |" in markdown and "median over images" in markdown and "| odd |" in markdown
    # the segmenter's self-check on each input, and the intervals over the 3 inputs
    assert [check["id"] for check in report["self_check"]] == ["0", "1", "2"]
    assert all(check["object_recall"] == 1 and check["input_expansion_ratio"] == 0 for check in report["self_check"])
    assert "lowest object recall 1, highest input expansion 0 over 3 inputs" in markdown
    assert report["intervals"]["mean"]["grown"]["expansion_ratio"] == pytest.approx([0.96] * 3)
    assert "95% bootstrap interval" in markdown
    printed = capsys.readouterr().out
    assert "| kept | 6 |" in printed
    assert "FID skipped: give --fid-weights" in printed and "LPIPS diversity skipped: give --lpips-weights" in printed


class StubEmbedder:
    """Stands in for a CLIP model: an image's mean colour is its embedding, every prompt is grey."""

    def embed_images(self, images):
        return F.normalize(images.mean(dim=(2, 3)), dim=-1)

    def embed_texts(self, prompts):
        return F.normalize(torch.ones(len(prompts), 3), dim=-1)


def test_fid_lpips_and_clip_metrics_are_computed_when_their_weights_are_given(tmp_path, monkeypatch):
    for name in ("inception.pth", "alexnet.pth", "alex.pth", "clip.bin"):
        (tmp_path / name).write_bytes(b"stand-in")
    # mean colour as the "Inception feature": FID only needs (B, D) features
    monkeypatch.setattr(fid_inception, "load_fid_inception", lambda path, device: lambda x: x.mean(dim=(2, 3)))
    monkeypatch.setattr(lpips, "load_lpips", lambda backbone, *paths, device: lpips.LPIPS(backbone))
    monkeypatch.setattr(clip_score, "load_clip_embedder", lambda name, path, device: StubEmbedder())
    report = evaluate_folders(tmp_path, "--fid-weights", str(tmp_path / "inception.pth"), "--lpips-weights",
                              str(tmp_path / "alexnet.pth"), str(tmp_path / "alex.pth"),
                              "--clip-checkpoint", str(tmp_path / "clip.bin"))
    for method in ("kept", "grown"):
        summary = report["summary"]["methods"][method]
        # Every image of a set has the same mean colour (the squares only move), so the covariances are 0
        # and FID is the squared distance between the mean colours of the inputs and of the method's images.
        real, generated = load_image_file(tmp_path / "0.png"), load_image_file(tmp_path / method / "0_0.png")
        distance = float(((real.mean(dim=(1, 2)) - generated.mean(dim=(1, 2))) ** 2).sum())
        assert summary["set_metrics"]["fid"] == pytest.approx(distance, rel=1e-4, abs=1e-6)
        # both samples of an input are equal
        assert summary["metrics"]["lpips_diversity"]["mean"] == pytest.approx(0, abs=1e-6)
        assert summary["metrics"]["background_diversity"]["mean"] == pytest.approx(0, abs=1e-6)
        assert summary["metrics"]["clip_score"]["count"] == 6
    # the object's box is red before and after in both methods
    assert report["summary"]["methods"]["kept"]["metrics"]["object_similarity"]["mean"] == pytest.approx(1, abs=1e-3)
    assert report["notes"] == []
    assert "fid" in (tmp_path / "report" / "report.md").read_text()


def error_of(capsys, argv) -> str:
    assert evaluate_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]  # the lines before are progress bars


def test_missing_generated_image_is_named_and_the_others_are_measured(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    folder = make_generated(manifest, tmp_path / "gen", grow=0)
    (folder / "1_0.png").unlink()
    (folder / "1_1.png").unlink()
    assert evaluate_cli.main(["--inputs", str(manifest), "--generated", f"x={folder}", "--segmenter", "colour",
                              "--out", str(tmp_path / "r")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "error: x: no generated image for input '1'" in errors[0] and "1_0.png" in errors[0]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {record["id"] for record in report["records"]} == {"0", "2"}
    assert any("no generated image for input '1'" in note for note in report["notes"])


def test_sample_files_match_the_exact_id_only(tmp_path):
    for name in ("1_0.png", "1_10.png", "1_2.png", "1_2_0.png", "1_mask.png", "11_0.png"):
        (tmp_path / name).touch()
    assert [(k, path.name) for k, path in run.sample_files(tmp_path, "1")] == [(0, "1_0.png"), (2, "1_2.png"),
                                                                               (10, "1_10.png")]


def test_manifest_line_without_a_prompt_is_named_with_its_number(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    lines = manifest.read_text().splitlines()
    lines[1] = json.dumps({"image": "1.png", "mask": "1_mask.png"})
    manifest.write_text("\n".join(lines))
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={tmp_path}", "--segmenter", "colour",
                              "--out", str(tmp_path / "r")])
    assert "line 2 lacks prompt" in error


def test_manifest_line_with_a_missing_image_names_line_and_file(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    (tmp_path / "2_mask.png").unlink()
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={tmp_path}", "--segmenter", "colour",
                              "--out", str(tmp_path / "r")])
    assert "line 3" in error and "2_mask.png does not exist" in error


def test_missing_metric_weights_are_named(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    folder = make_generated(manifest, tmp_path / "gen", grow=0)
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={folder}", "--segmenter", "colour",
                              "--out", str(tmp_path / "r"), "--fid-weights", str(tmp_path / "pt_inception.pth")])
    assert error.startswith("error: --fid-weights") and "pt_inception.pth" in error


def test_weights_of_the_wrong_kind_are_a_one_line_error(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    folder = make_generated(manifest, tmp_path / "gen", grow=0)
    (tmp_path / "notes.txt").write_text("not weights")
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={folder}", "--segmenter", "colour",
                              "--out", str(tmp_path / "r"), "--fid-weights", str(tmp_path / "notes.txt")])
    assert error.startswith(f"error: cannot load {tmp_path / 'notes.txt'} as the FID Inception")


@pytest.mark.parametrize("kind", ["random bytes", "text", "a list", "planted code"])
def test_fid_weights_that_are_not_weights_give_one_line_naming_the_file(tmp_path, capsys, kind):
    manifest = make_inputs(tmp_path)
    folder = make_generated(manifest, tmp_path / "gen", grow=0)
    weights, marker = tmp_path / "inception.pth", tmp_path / "code_ran"
    if kind == "random bytes":
        weights.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0),
                                          dtype=torch.uint8).numpy().tobytes())
    elif kind == "text":
        weights.write_text("hello\n")
    else:
        torch.save([1, 2] if kind == "a list" else {"weight": PlantedCode(marker)}, weights)
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={folder}", "--segmenter", "colour",
                              "--out", str(tmp_path / "r"), "--fid-weights", str(weights)])
    assert error.startswith(f"error: cannot load {weights} as the FID Inception")  # the last line: a
    # multi-line message would end elsewhere
    assert "weights_only" not in error and "Traceback" not in error
    if kind == "planted code":
        assert not marker.exists() and "cannot be loaded safely" in error and ".safetensors" in error


def test_own_images_need_sam_unless_the_colour_segmenter_is_asked_for(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    folder = make_generated(manifest, tmp_path / "gen", grow=0)
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={folder}", "--out", str(tmp_path / "r")])
    assert "--mask-weights" in error


def test_two_folders_of_one_name_are_refused(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    first, second = tmp_path / "a" / "gen", tmp_path / "b" / "gen"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", str(first), str(second),
                              "--segmenter", "colour"])
    assert "two image folders are called 'gen'" in error


def test_regenerating_fewer_samples_removes_the_stale_ones(tmp_path):
    manifest = make_inputs(tmp_path, count=1)
    inputs = read_manifest(manifest)

    def pipeline(image, mask, prompt, num_images, options, generator):
        return torch.zeros(num_images, *image.shape)

    run.generate(pipeline, inputs, tmp_path / "gen", 3, SamplingOptions(), seed=0, settings={"seed": 0})
    run.generate(pipeline, inputs, tmp_path / "gen", 1, SamplingOptions(), seed=0, settings={"seed": 0})
    assert [path.name for path in run.generated_samples(tmp_path / "gen", inputs[0])] == ["0_0.png"]


def test_generate_mode_on_toy_scenes_compares_with_and_without_controlnet(tmp_path):
    torch.manual_seed(0)
    weights = save_checkpoint(build_models(TOY), tmp_path / "weights", "diffusers")
    assert evaluate_cli.main(["--generate", "--toy", "2", "--num-images", "1", "--steps", "2", "--checkpoint",
                              str(weights), "--preset", "toy", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["summary"]["methods"]) == {"controlnet", "no-controlnet"}
    assert len(report["records"]) == 4
    assert all("background_match" in record for record in report["records"])  # toy scenes: prompt following
    for method in ("controlnet", "no-controlnet"):
        assert sorted(path.name for path in (tmp_path / "eval" / method).iterdir()) == [
            "0000_0.png", "0001_0.png", "settings.json"]
    assert (tmp_path / "eval" / "inputs" / "manifest.jsonl").is_file()
    assert "Background as prompted" in (tmp_path / "eval" / "report.md").read_text()


def test_control_scale_zero_reproduces_the_unet_alone_on_the_same_noise(tmp_path):
    torch.manual_seed(0)
    models = build_models(TOY)
    for zero_conv in [*models.controlnet.controlnet_down_blocks, models.controlnet.controlnet_mid_block]:
        torch.nn.init.normal_(zero_conv.weight, std=0.5)  # a ControlNet that acts
    weights = save_checkpoint(models, tmp_path / "weights", "diffusers")
    common = ["--generate", "--toy", "1", "--num-images", "1", "--steps", "2", "--checkpoint", str(weights),
              "--preset", "toy"]
    folders = {}
    for name, extra in [("scale0", ["--methods", "controlnet", "--control-scale", "0"]),
                        ("scale1", ["--methods", "controlnet"]), ("alone", ["--methods", "no-controlnet"])]:
        assert evaluate_cli.main(common + extra + ["--out", str(tmp_path / name)]) == 0
        folders[name] = load_image_file(next((tmp_path / name).glob("*controlnet/0000_0.png")))
    assert torch.equal(folders["scale0"], folders["alone"])
    assert not torch.equal(folders["scale1"], folders["alone"])


def test_a_controlnet_window_that_ends_before_it_starts_is_a_flag_error(tmp_path, capsys):
    assert "--control-start 0.6 and --control-end 0.4" in error_of(capsys, [
        "--generate", "--toy", "1", "--control-start", "0.6", "--control-end", "0.4", "--out", str(tmp_path)])


def test_a_sampling_flag_out_of_range_is_one_line_naming_the_flag_before_any_work(tmp_path, capsys):
    assert evaluate_cli.main(["--generate", "--toy", "1", "--guidance", "nan", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --guidance must be a finite number >= 0, got nan"]
    assert not (tmp_path / "eval").exists()  # not even the toy inputs were written
