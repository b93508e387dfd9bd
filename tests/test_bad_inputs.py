"""Bad inputs, tool by tool: each row is a command a user could type, the exit code it must end with and
a piece of its one-line message. Every row also checks that no traceback is printed, that every input
file is byte for byte what it was, and that the outputs finished before a failure are kept.

What cannot be made safely is simulated: a read-only or full disk (EROFS / ENOSPC from the writes), an
out-of-memory error (torch.OutOfMemoryError from the sampling), a huge photo (a small --max-pixels), a
Ctrl-C (KeyboardInterrupt from the sampling). The CLIs run in-process, their networks stubbed where the
model is not what is under test, so the table stays fast.

New flags and tools add their rows here.
"""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from PIL import Image

import evaluate as evaluate_cli
import sample as sample_cli
import train as train_cli
from salient_outpaint import batch, outputs
from salient_outpaint.config import TOY
from salient_outpaint.data import pack
from salient_outpaint.data.captions.command import main as captions_main
from salient_outpaint.data.images import check_pixels, load_image
from salient_outpaint.evaluation.run import write_toy_manifest
from salient_outpaint.files import TEMPORARY_SUFFIX
from salient_outpaint.inputs import InputError
from salient_outpaint.segmentation import make_masks

FAST = ["--steps", "1", "--num-images", "2"]


def cutout(path: Path, colour=(250, 20, 20), size=(48, 40)) -> Path:
    """An RGBA cut-out (the alpha channel is the mask)."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((*colour, 255), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    image.save(path)
    return path


def world(root: Path) -> Path:
    """The inputs every row starts from: photos/a.png, photos/a_1.png (a name that a's results would
    take), photos/c.png, masks/blank.png, a plain file, and toy/ (evaluate.py --toy 2's scenes) with
    two of them copied to scenes/ and as the generated images of generated/."""
    (root / "photos").mkdir()
    for name, colour in (("a", (250, 20, 20)), ("a_1", (20, 250, 20)), ("c", (20, 20, 250))):
        cutout(root / "photos" / f"{name}.png", colour)
    (root / "masks").mkdir()
    Image.new("L", (48, 40), 0).save(root / "masks" / "blank.png")
    (root / "a_file").write_text("not a folder")
    write_toy_manifest(root / "toy", 2)
    for folder, names in (("scenes", ("s0.png", "s1.png")), ("generated", ("0000_0.png", "0000_1.png")),
                          ("controlnet", ("s0_0.png",))):
        (root / folder).mkdir()
        for name in names:
            shutil.copy(root / "toy" / "0000.png", root / folder / name)
    return root


def manifest(root: Path, name: str, lines: list, encoding: str = "utf-8") -> str:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines) + "\n"
    (root / name).write_bytes(text.encode(encoding))
    return str(root / name)


def dataset(root: Path) -> Path:
    """A salient-object folder in DUTS's layout (the captions tool's input): two photos, their masks."""
    for folder in ("DUTS-TR-Image", "DUTS-TR-Mask"):
        (root / "dataset" / folder).mkdir(parents=True, exist_ok=True)
    for name in ("p0", "p1"):
        Image.new("RGB", (16, 16), (200, 10, 10)).save(root / "dataset" / "DUTS-TR-Image" / f"{name}.jpg")
        Image.new("L", (16, 16), 255).save(root / "dataset" / "DUTS-TR-Mask" / f"{name}.png")
    (root / "coca.pt").write_bytes(b"weights")
    return root / "dataset"


def fingerprints(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and not path.relative_to(root).parts[0] in skip}


# Simulations ---------------------------------------------------------------------------------------

def stub_model(monkeypatch, fail: Callable[[int], None] | None = None):
    """sample.py without its networks: grey results; `fail(call_number)` may raise."""
    calls = []

    def fake_outpaint(pipeline, image, mask, prompt, negative_prompt, num_images, *args, **kwargs):
        calls.append(prompt)
        if fail:
            fail(len(calls))
        return torch.zeros(num_images, *image.shape)

    monkeypatch.setattr(sample_cli, "load_models", lambda *args, **kwargs: None)
    monkeypatch.setattr(sample_cli, "OutpaintPipeline", lambda *args: SimpleNamespace(models=SimpleNamespace(config=TOY)))
    monkeypatch.setattr(batch, "outpaint_photo", fake_outpaint)


def out_of_memory_on_first(monkeypatch):
    def fail(call):
        if call == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
    stub_model(monkeypatch, fail)


def interrupted_on_second(monkeypatch):
    def fail(call):
        if call == 2:
            raise KeyboardInterrupt
    stub_model(monkeypatch, fail)


def disk_fills_on_third_write(monkeypatch):
    """The third PNG written hits a full disk midway (a partial file is on the disk when it fails)."""
    stub_model(monkeypatch)
    save, writes = Image.Image.save, []

    def failing_save(self, fp, *args, **kwargs):
        writes.append(fp)
        if len(writes) == 3:
            Path(fp).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device", str(fp))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)


def read_only_disk(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(outputs.tempfile, "TemporaryFile", refuse)


@dataclass
class Row:
    id: str
    tool: str  # sample, evaluate, train, make-masks, shards, captions
    argv: Callable[[Path], list[str]]  # from the world's root
    code: int
    message: str  # a piece of the one-line message
    simulate: Callable | None = None
    kept: tuple[str, ...] = ()  # outputs (relative to OUT) that must be there afterwards
    out: str = "out"


ROWS = [
    # 1. data loss: the input folder as the output folder
    Row("sample: --out is the input folder", "sample",
        lambda root: ["--image", f"{root}/photos", "--prompt", "x", *FAST, "--out", f"{root}/photos"],
        2, "would overwrite the input", simulate=stub_model),
    Row("sample: --out is a manifest's folder", "sample",
        lambda root: ["--inputs", manifest(root, "m.jsonl", [{"id": "a", "image": "photos/a_1.png",
                                                               "mask": "masks/blank.png", "prompt": ""}]),
                      *FAST, "--out", f"{root}/photos"],
        2, "would overwrite the input", simulate=stub_model),
    # 10, 11. where the results go
    Row("sample: --out ''", "sample", lambda root: ["--out", ""], 2, "--out is empty"),
    Row("sample: --out a file", "sample", lambda root: ["--out", f"{root}/a_file"], 2, "is a file"),
    Row("sample: --out read-only", "sample", lambda root: ["--out", f"{root}/out"], 2,
        "not a folder this program can write to (Read-only file system)", simulate=read_only_disk),
    Row("sample: the disk fills midway", "sample",
        lambda root: ["--image", f"{root}/photos", "--prompt", "x", *FAST, "--out", f"{root}/out"],
        1, "the disk is full writing", simulate=disk_fills_on_third_write, kept=("a_0.png", "a_1.png")),
    Row("sample: Ctrl-C", "sample",
        lambda root: ["--image", f"{root}/photos", "--prompt", "x", "--num-images", "1", "--out", f"{root}/out"],
        130, "interrupted: finished outputs are kept; rerun the same command to resume",
        simulate=interrupted_on_second, kept=("a_0.png", "a_grid.png")),
    # 3-6. memory
    Row("sample: a photo past --max-pixels", "sample",
        lambda root: ["--image", f"{root}/photos/a.png", "--prompt", "x", *FAST, "--max-pixels", "1000",
                      "--out", f"{root}/out"],
        1, "48 x 40 = 0.0 megapixels; --max-pixels takes at most 0.0", simulate=stub_model),
    Row("sample: one photo out of memory, the batch goes on", "sample",
        lambda root: ["--image", f"{root}/photos", "--prompt", "x", *FAST, "--out", f"{root}/out"],
        1, "out of memory (lower --batch-size or --resolution", simulate=out_of_memory_on_first,
        kept=("a_1_0.png", "a_1_1.png", "a_1_grid.png", "c_0.png", "c_1.png", "c_grid.png")),
    Row("sample: --resolution past its bound", "sample", lambda root: ["--resolution", "100000"], 2,
        "--resolution must be a multiple of 8 from 8 to 2048, got 100000"),
    Row("sample: --max-pixels 0", "sample", lambda root: ["--max-pixels", "0"], 2, "--max-pixels must be at least 1"),
    # 7. NaN and infinity
    *[Row(f"sample: {flag} {value}", "sample", lambda root, flag=flag, value=value: [flag, value], 2,
          f"{flag} must be a finite number") for flag, value in (("--control-scale", "nan"), ("--eta", "nan"),
                                                                 ("--guidance", "inf"), ("--guidance", "nan"))],
    Row("sample: --control-start nan", "sample", lambda root: ["--control-start", "nan"], 2,
        "--control-start nan and --control-end 1 must satisfy"),
    Row("sample: --mask-threshold nan", "sample", lambda root: ["--mask-threshold", "nan"], 2,
        "--mask-threshold must be in (0, 1]"),
    # 11. odd inputs
    Row("sample: --image /dev/null", "sample", lambda root: ["--image", "/dev/null", "--prompt", "x"], 2,
        "--image /dev/null is neither a file nor a folder"),
    *[Row(f"sample: manifest image {shown}", "sample",
          lambda root, value=value: ["--inputs", manifest(root, "m.jsonl", [{"image": value, "mask": "photos/a.png",
                                                                             "prompt": ""}])],
          2, f"line 1: image must be a file path (a string), not {shown}") for value, shown in ((5, "5"),
                                                                                           (None, "null"))],
    Row("sample: manifest image a folder", "sample",
        lambda root: ["--inputs", manifest(root, "m.jsonl", [{"image": "photos", "mask": "photos/a.png",
                                                              "prompt": ""}])],
        2, "line 1: the image", ),
    Row("sample: a Latin-1 manifest", "sample",
        lambda root: ["--inputs", manifest(root, "m.jsonl", [{"image": "photos/a.png", "mask": "photos/a.png",
                                                              "prompt": "un café"}], encoding="latin-1")],
        2, "m.jsonl line 1 is not UTF-8 text"),
    Row("sample: manifest id '..'", "sample",
        lambda root: ["--inputs", manifest(root, "m.jsonl", [{"id": "..", "image": "photos/a.png",
                                                              "mask": "photos/a.png", "prompt": ""}])],
        2, "may not start with '.'"),
    # 12. segmenter weights and --mask-grow
    Row("sample: --mask-weights missing", "sample",
        lambda root: ["--image", f"{root}/photos", "--prompt", "x", "--mask-weights", f"{root}/none.pth"],
        2, "--mask-weights", ),
    # 9. evaluate.py's options
    *[Row(f"evaluate: {' '.join(flags)}", "evaluate",
          lambda root, flags=flags: ["--toy", "2", "--generate", *flags, "--out", f"{root}/out"], 2, message)
      for flags, message in ((["--guidance", "-1"], "--guidance must not be negative"),
                             (["--control-scale", "-5"], "--control-scale must not be negative"),
                             (["--seed", "-1"], "--seed must be in [0, 2**63 - 1"),
                             (["--guidance", "nan"], "--guidance must be a finite number"),
                             (["--control-end", "nan"], "must satisfy 0 <= start < end <= 1"))],
    # 2, 10. evaluate.py's output folder, before any work
    Row("evaluate: --out a file", "evaluate", lambda root: ["--toy", "2", "--generate", "--out", f"{root}/a_file"],
        2, "is a file"),
    Row("evaluate: --out ''", "evaluate", lambda root: ["--toy", "2", "--generate", "--out", ""], 2, "--out is empty"),
    Row("evaluate: --out read-only", "evaluate", lambda root: ["--toy", "2", "--generate", "--out", f"{root}/out"],
        2, "Read-only file system", simulate=read_only_disk),
    Row("evaluate: --generate would overwrite an input", "evaluate",
        lambda root: ["--inputs", manifest(root, "controlnet/m.jsonl", [{"id": "s0", "image": "s0_0.png",
                                                                         "mask": "s0_0.png", "prompt": ""}]),
                      "--generate", "--methods", "controlnet", "--segmenter", "colour", "--out", f"{root}"],
        2, "would overwrite the input"),
    # 12. evaluate.py goes on past a bad file
    Row("evaluate: a damaged generated image", "evaluate",
        lambda root: ["--toy", "2", "--generated", f"ours={root}/generated", "--segmenter", "colour",
                      "--out", f"{root}/out"],
        1, "skipped", kept=("report.json", "report.md")),
    # 8. train.py's options
    *[Row(f"train: {' '.join(flags)}", "train", lambda root, flags=flags: [*flags, "--out-dir", f"{root}/out"], 2,
          message)
      for flags, message in ((["--ema-decay", "2"], "--ema-decay must be a finite number >= 0 and < 1, got 2.0"),
                             (["--max-grad-norm", "-1"], "--max-grad-norm must be a finite number > 0"),
                             (["--resolution", "7"], "--resolution must be a multiple of 16"),
                             (["--resolution", "0"], "--resolution must be a multiple of 16"),
                             (["--learning-rate", "-1"], "--learning-rate must be a finite number > 0"),
                             (["--learning-rate", "nan"], "--learning-rate must be a finite number > 0, got nan"),
                             (["--empty-prompt-probability", "2"], "--empty-prompt-probability must be"),
                             (["--data-weights", "inf"], "--data-weights must be a finite number"),
                             (["--texture-weight", "-1"], "--texture-weight must not be negative, got -1.0"),
                             (["--stage", "unet", "--texture-weight", "1"], "--texture-weight is a term of the vae "
                              "and decoder stages' loss, not the unet stage's"))],
    Row("train: --out-dir a file", "train", lambda root: ["--steps", "1", "--out-dir", f"{root}/a_file"], 2,
        "--out-dir"),
    Row("train: --out-dir read-only", "train", lambda root: ["--steps", "1", "--out-dir", f"{root}/out"], 2,
        "Read-only file system", simulate=read_only_disk),
    # make-masks
    Row("make-masks: OUT is the images' folder", "make-masks",
        lambda root: ["make-masks", f"{root}/photos", f"{root}/photos", "--segmenter", "colour"], 2,
        "would overwrite the input"),
    Row("make-masks: OUT a file", "make-masks",
        lambda root: ["make-masks", f"{root}/photos", f"{root}/a_file", "--segmenter", "colour"], 2, "is a file"),
    Row("make-masks: --threshold nan", "make-masks",
        lambda root: ["make-masks", f"{root}/photos", f"{root}/out", "--segmenter", "colour", "--threshold", "nan"],
        2, "--threshold must be a finite number > 0 and <= 1"),
    Row("make-masks: a bad image, the others are done", "make-masks",
        lambda root: ["make-masks", f"{root}/scenes", f"{root}/out", "--segmenter", "colour"], 1,
        "skipped", kept=("s0.png",)),
    # the flags of faster sampling (issue 22) and of --hires (issue 23)
    *[Row(f"sample: {flag} {value}", "sample", lambda root, flag=flag, value=value: [flag, value], 2, message)
      for flag, value, message in (("--guidance-end", "1.5", "--guidance-end must be in [0, 1]"),
                                   ("--guidance-end", "nan", "--guidance-end must be in [0, 1]"),
                                   ("--cache-interval", "0", "--cache-interval must be at least 1"),
                                   ("--hires-size", "100", "--hires-size must be a positive multiple of 8"),
                                   ("--hires-strength", "0", "--hires-strength must be in (0, 1]"),
                                   ("--hires-strength", "nan", "--hires-strength must be in (0, 1]"))],
    Row("evaluate: --guidance-end nan", "evaluate",
        lambda root: ["--toy", "2", "--generate", "--guidance-end", "nan", "--out", f"{root}/out"], 2,
        "--guidance-end must be in [0, 1]"),
    # the captions tool (issue 25)
    Row("captions: --out is one of the photos", "captions",
        lambda root: [str(dataset(root)), "--out", f"{root}/dataset/DUTS-TR-Image/p0.jpg",
                      "--weights", f"{root}/coca.pt"], 2, "would overwrite the input"),
    Row("captions: --out a folder", "captions",
        lambda root: [str(dataset(root)), "--out", f"{root}/photos", "--weights", f"{root}/coca.pt"], 2,
        "is a folder"),
    Row("captions: the weights file is missing", "captions",
        lambda root: [str(dataset(root)), "--out", f"{root}/out/captions.jsonl", "--weights", f"{root}/none.pt"],
        2, "--weights FILE"),
    Row("captions: ROOT holds no dataset", "captions",
        lambda root: [f"{root}/masks", "--out", f"{root}/out/captions.jsonl", "--weights", f"{root}/coca.pt"], 2,
        "masks"),
    # shards pack
    Row("shards pack: --out a file", "shards", lambda root: ["pack", "--data", "toy:2", "--out", f"{root}/a_file"],
        2, "is a file"),
]


def run_tool(tool: str, argv: list[str]) -> int:
    """The tool's main in-process; a SystemExit (argparse, make-masks' parser.exit) gives its code."""
    main = {"sample": sample_cli.main, "evaluate": evaluate_cli.main, "train": train_cli.main,
            "make-masks": make_masks.main, "shards": pack.main, "captions": captions_main}[tool]
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_a_bad_input_is_one_line_and_loses_nothing(row, tmp_path, monkeypatch, capsys):
    root = world(tmp_path)
    if row.id.startswith("evaluate: a damaged"):
        (root / "generated" / "0001_0.png").write_bytes(b"\x89PNG damaged")
    if row.id.startswith("make-masks: a bad image"):
        (root / "scenes" / "s1.png").write_bytes(b"not a picture")
    if row.simulate:
        row.simulate(monkeypatch)
    argv = row.argv(root)  # may write a manifest: an input too
    before = fingerprints(root, skip=(row.out,))
    monkeypatch.chdir(tmp_path)  # an output written to '' would land here, among the inputs
    code = run_tool(row.tool, argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:") or line.startswith("interrupted")]
    assert code == row.code, err
    assert any(row.message in line for line in errors), err
    assert fingerprints(root, skip=(row.out,)) == before, "an input file changed, or a file appeared among them"
    out = root / row.out
    for name in row.kept:
        assert (out / name).is_file(), f"{name} was finished but is gone"
        if name.endswith(".png"):
            load_image(out / name)  # whole: it decodes
    assert not list(root.rglob(f"*{TEMPORARY_SUFFIX}")), "a partial file was left behind"


def test_an_image_past_pillows_own_limit_is_called_too_large(tmp_path, monkeypatch):
    cutout(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    check_pixels(tmp_path / "a.png", "image", max_pixels=10_000)  # the header reads whatever Pillow's limit
    with pytest.raises(InputError, match="48 x 40 = 0.0 megapixels; --max-pixels takes at most 0.0"):
        check_pixels(tmp_path / "a.png", "image", max_pixels=1000)
    with pytest.raises(InputError, match="is too large"):
        load_image(tmp_path / "a.png")


def test_mask_grow_beside_a_mask_file_is_a_warning(tmp_path, monkeypatch, capsys):
    root = world(tmp_path)
    stub_model(monkeypatch)
    assert sample_cli.main(["--image", f"{root}/photos/a.png", "--mask", f"{root}/masks/blank.png",
                            "--prompt", "x", "--mask-grow", "4", *FAST, "--out", f"{root}/out"]) in (0, 1)
    assert "warning: --mask-grow shapes the masks a segmenter finds" in capsys.readouterr().err


def test_shrinking_a_found_mask_to_nothing_is_blamed_on_mask_grow():
    from salient_outpaint.segmentation import SegmenterError, automatic_mask

    image = torch.zeros(3, 32, 32)
    found = torch.zeros(1, 32, 32)
    found[:, 10:20, 10:20] = 1.0
    with pytest.raises(SegmenterError, match="--mask-grow -100000 shrank the object in photo.png to nothing"):
        automatic_mask(lambda image, prompt: found, image, grow=-100000, name="photo.png")


def test_a_request_over_max_memory_is_refused_before_any_model_runs():
    from salient_outpaint.app.memory import GIB, request_memory
    from salient_outpaint.app.service import OutpaintService
    from salient_outpaint.loading import load_models
    from salient_outpaint.options import SamplingOptions

    largest = request_memory(5000, 8000, num_images=8, compare=True)  # 40 MP, 8 images, compare
    assert request_memory(5000, 8000, num_images=1, compare=False) < largest
    service = OutpaintService(load_models(), max_memory=largest - 1)
    service.pipeline = None  # any model run would fail with a traceback, not the one line below
    image, mask = torch.zeros(3, 5000, 8000), torch.zeros(1, 5000, 8000)
    mask[:, 2000:3000, 3000:4000] = 1
    with pytest.raises(InputError, match=f"needs about {largest / GIB:.1f} GiB .* and this server allows"):
        service.generate(image, mask, "", "", SamplingOptions(), 0, 8, True)
