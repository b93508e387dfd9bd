"""evaluate.py: expansion from folders of generated images, the toy generate mode, and its errors."""
import json
from pathlib import Path

import pytest
import torch

import evaluate as evaluate_cli
from salient_outpaint.checkpoints import save_checkpoint
from salient_outpaint.config import TOY
from salient_outpaint.data.images import save_image
from salient_outpaint.data.masks import dilate
from salient_outpaint.modules import build_models

SIZE = 32


def make_inputs(folder: Path, count=3) -> Path:
    """Red squares on grey; category alternates so that per-category summaries have two groups."""
    lines = []
    for index in range(count):
        image = torch.full((3, SIZE, SIZE), -0.2)
        mask = torch.zeros(1, SIZE, SIZE)
        mask[:, 10:20, 8 + index: 18 + index] = 1
        image[:, mask[0].bool()] = torch.tensor([0.9, -0.9, -0.9])[:, None]
        save_image(image, folder / f"{index}.png")
        save_image(mask.expand(3, -1, -1) * 2 - 1, folder / f"{index}_mask.png")
        lines.append(json.dumps({"id": str(index), "image": f"{index}.png", "mask": f"{index}_mask.png",
                                 "prompt": "a red square", "category": "even" if index % 2 == 0 else "odd"}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "manifest.jsonl"


def make_generated(inputs: Path, out: Path, grow: int, samples=2) -> Path:
    """'Generated' images: a new blue background, the red object grown by `grow` pixels."""
    out.mkdir()
    for line in inputs.read_text().splitlines():
        entry = json.loads(line)
        from salient_outpaint.data.images import load_mask
        mask = dilate(load_mask(inputs.parent / entry["mask"]), grow)[0].bool()
        for sample in range(samples):
            image = torch.zeros(3, SIZE, SIZE)
            image[2] = 0.8
            image[:, mask] = torch.tensor([0.9, -0.9, -0.9])[:, None]
            save_image(image, out / f"{entry['id']}_{sample}.png")
    return out


def test_expansion_is_zero_for_kept_objects_and_measured_for_grown_ones(tmp_path):
    manifest = make_inputs(tmp_path)
    kept = make_generated(manifest, tmp_path / "kept", grow=0)
    grown = make_generated(manifest, tmp_path / "grown", grow=2)
    assert evaluate_cli.main(["--inputs", str(manifest), "--generated", f"kept={kept}", f"grown={grown}",
                              "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    methods = report["summary"]["methods"]
    assert methods["kept"]["metrics"]["expansion_fraction"]["mean"] == 0
    # a 10x10 square grown by 2 px: 14x14 - 10x10 = 96 pixels of a 32x32 image, 0.96 of the object
    assert methods["grown"]["metrics"]["expansion_fraction"]["mean"] == pytest.approx(96 / SIZE ** 2)
    assert methods["grown"]["metrics"]["expansion_ratio"]["mean"] == pytest.approx(0.96)
    assert set(methods["grown"]["per_category"]) == {"even", "odd"}
    assert methods["kept"]["count"] == 6
    assert "| grown |" in (tmp_path / "report" / "report.md").read_text()


def error_of(capsys, argv) -> str:
    assert evaluate_cli.main(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_generated_image_is_named(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    folder = make_generated(manifest, tmp_path / "gen", grow=0)
    (folder / "1_0.png").unlink()
    (folder / "1_1.png").unlink()
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={folder}", "--out", str(tmp_path / "r")])
    assert error.startswith("error: no generated image for input '1'")


def test_manifest_line_without_a_prompt_is_named_with_its_number(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    lines = manifest.read_text().splitlines()
    lines[1] = json.dumps({"image": "1.png", "mask": "1_mask.png"})
    manifest.write_text("\n".join(lines))
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={tmp_path}", "--out", str(tmp_path / "r")])
    assert "line 2 lacks prompt" in error


def test_missing_metric_weights_are_named(tmp_path, capsys):
    manifest = make_inputs(tmp_path)
    folder = make_generated(manifest, tmp_path / "gen", grow=0)
    error = error_of(capsys, ["--inputs", str(manifest), "--generated", f"x={folder}", "--out", str(tmp_path / "r"),
                              "--fid-weights", str(tmp_path / "pt_inception.pth")])
    assert "pt_inception.pth" in error


def test_generate_mode_on_toy_scenes_compares_with_and_without_controlnet(tmp_path):
    torch.manual_seed(0)
    weights = save_checkpoint(build_models(TOY), tmp_path / "weights", "diffusers")
    assert evaluate_cli.main(["--generate", "--toy", "2", "--num-images", "1", "--steps", "2", "--checkpoint",
                              str(weights), "--preset", "toy", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["summary"]["methods"]) == {"controlnet", "no-controlnet"}
    assert len(report["records"]) == 4
    assert all("background_match" in record for record in report["records"])
    assert (tmp_path / "eval" / "images" / "controlnet" / "0000_0.png").is_file()
