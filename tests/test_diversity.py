"""Diversity between the samples of one input: the toy world's stand-in for LPIPS (mean per-pixel
distance in the background), on known answers, and per category in evaluate.py's report."""
import json

import pytest
import torch

import evaluate as evaluate_cli
from salient_outpaint.data.images import mask_as_image, save_image
from salient_outpaint.evaluation.diversity import background_pixel_diversity


def object_in_corner(size=8) -> torch.Tensor:
    object_mask = torch.zeros(size, size, dtype=torch.bool)
    object_mask[:4, :4] = True
    return object_mask


def test_identical_samples_are_at_distance_zero_whatever_their_objects():
    samples = torch.rand(3, 3, 8, 8) * 2 - 1
    samples[1:, :, ~object_in_corner()] = samples[0, :, ~object_in_corner()]  # same background ...
    samples[1, :, :4, :4] = 1.0  # ... different objects: the object is not the background
    assert background_pixel_diversity(samples, object_in_corner()) == pytest.approx(0.0, abs=1e-7)


def test_black_against_white_is_one_and_pairs_are_averaged():
    black, white = torch.full((3, 8, 8), -1.0), torch.full((3, 8, 8), 1.0)
    assert background_pixel_diversity(torch.stack([black, white]), object_in_corner()) == pytest.approx(1.0)
    # pairs (black, white) 1, (black, black) 0, (white, black) 1: mean 2/3
    assert background_pixel_diversity(torch.stack([black, white, black]), object_in_corner()) == pytest.approx(2 / 3)


def test_only_the_background_counts():
    first, second = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    second[0, 6, 6] = 1.0  # one background channel value of 64 x 3 differs by 0.5 on the [0, 1] scale
    second[:, :4, :4] = 1.0  # the object differs everywhere: ignored
    expected = 0.5 / (3 * (64 - 16))
    assert background_pixel_diversity(torch.stack([first, second]), object_in_corner()) == pytest.approx(expected)


def test_one_sample_or_no_background_is_refused():
    with pytest.raises(ValueError, match="K >= 2"):
        background_pixel_diversity(torch.zeros(1, 3, 8, 8), object_in_corner())
    with pytest.raises(ValueError, match="no background"):
        background_pixel_diversity(torch.zeros(2, 3, 8, 8), torch.ones(8, 8, dtype=torch.bool))


def test_evaluate_reports_diversity_per_method_and_category(tmp_path):
    """Two inputs, one per category: in 'sky' the two samples' backgrounds are black and white
    (diversity 1), in 'sand' they are equal (0)."""
    inputs, generated = tmp_path / "inputs", tmp_path / "varied"
    inputs.mkdir(), generated.mkdir()
    object_mask = object_in_corner(16).float()[None]
    lines = []
    for index, (category, backgrounds) in enumerate([("sky", (-1.0, 1.0)), ("sand", (0.2, 0.2))]):
        image = torch.full((3, 16, 16), 0.0)
        image[0, :4, :4] = 0.9  # a red object
        save_image(image, inputs / f"{index}.png")
        save_image(mask_as_image(object_mask), inputs / f"{index}_mask.png")
        lines.append(json.dumps({"id": str(index), "image": f"{index}.png", "mask": f"{index}_mask.png",
                                 "prompt": "a red square", "category": category}))
        for sample, value in enumerate(backgrounds):
            painted = image.clone()
            painted[:, ~object_mask[0].bool()] = value
            save_image(painted, generated / f"{index}_{sample}.png")
    (inputs / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    assert evaluate_cli.main(["--inputs", str(inputs / "manifest.jsonl"), "--generated", str(generated),
                              "--segmenter", "colour", "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "report.json").read_text())["summary"]["methods"]["varied"]
    per_category = summary["per_category"]
    assert per_category["sky"]["background_diversity"]["mean"] == pytest.approx(1.0, abs=1e-2)  # 8-bit PNGs
    assert per_category["sand"]["background_diversity"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert summary["metrics"]["background_diversity"]["mean"] == pytest.approx(0.5, abs=1e-2)
    assert "Background diversity" in (tmp_path / "report" / "report.md").read_text()
