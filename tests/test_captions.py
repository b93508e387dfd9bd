"""The captioning tool (python -m salient_outpaint.data.captions): decoding token for token as open_clip's
own CoCa `generate`, batches, resuming after a kill, every dataset layout, and a training run on its captions.

The model is the tiny CoCa of tests/fixtures/coca_tiny.py (random weights, widths of 64); the references
are open_clip's generate on it, recorded by tests/fixtures/make_caption_fixtures.py (it needs transformers,
the package does not). Tokens are compared exactly: the best two candidates of a step differ by ~1e-3 in
this model and float rounding by ~1e-6, so any difference is a difference of the search, not of rounding.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train as train_cli
from salient_outpaint.data.captions.command import main as captions_main
from salient_outpaint.data.captions.decoding import Decoding, decode
from salient_outpaint.data.captions.folder import caption_folder, missing_captions
from salient_outpaint.data.datasets import SalientFolderDataset, load_captions
from salient_outpaint.data.layouts import FOLDER_LAYOUTS, find_layout
from tests.conftest import write_pair
from tests.fixtures.coca_tiny import STOP, register, save_tiny_coca, tiny_coca, tiny_pixels

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "captions.json").read_text())
START, PAD = 49406, 0


def decoding_of(arguments: dict) -> Decoding:
    """open_clip generate's keyword arguments -> ours (its defaults: 6 beams in 3 groups, 30 and 5 tokens)."""
    greedy = arguments.get("generation_type") == "top_k"
    return Decoding(beams=1 if greedy else arguments.get("num_beams", 6),
                    beam_groups=1 if greedy else arguments.get("num_beam_groups", 3),
                    max_length=arguments.get("seq_len", 30), min_length=arguments.get("min_seq_len", 5),
                    repetition_penalty=arguments.get("repetition_penalty", 1.0))


def next_scores_of(model, pixels):
    image_latent, image_embs = model._encode_image(pixels)

    def next_scores(tokens):
        repeats = len(tokens) // len(pixels)
        return model(None, tokens, image_latent=image_latent.repeat_interleave(repeats, dim=0),
                     image_embs=image_embs.repeat_interleave(repeats, dim=0), output_labels=False)["logits"][:, -1]
    return next_scores


@pytest.fixture(scope="module")
def model():
    return tiny_coca()


def prompts(case: dict, count: int) -> torch.Tensor:
    from open_clip.tokenizer import SimpleTokenizer
    prefix = SimpleTokenizer().encode(FIXTURES["prefix"]) if case["prefix"] else []
    return torch.tensor([[START] + prefix] * count)


@pytest.mark.parametrize("name", sorted(FIXTURES["cases"]))
def test_decoding_equals_open_clip_generate_token_for_token(model, name):
    case = FIXTURES["cases"][name]
    pixels = tiny_pixels(len(case["tokens"]))
    texts = decode(next_scores_of(model, pixels), prompts(case, len(pixels)), decoding_of(case["arguments"]),
                   STOP, PAD)
    for text, reference in zip(texts, case["tokens"]):
        assert text == reference[:len(text)]
        assert all(token == PAD for token in reference[len(text):])  # open_clip pads the shorter rows


def test_open_clips_default_groups_repeat_one_search_of_two_beams(model):
    """open_clip sets no diversity penalty, so its 6 beams in 3 groups are 3 copies of a 2-beam search
    (what docs/datasets.md tells users: --beams 2 gives its captions at a third of the cost)."""
    case = FIXTURES["cases"]["beam_default_groups"]
    pixels = tiny_pixels(len(case["tokens"]))
    texts = decode(next_scores_of(model, pixels), prompts(case, len(pixels)),
                   Decoding(beams=2, max_length=case["arguments"]["seq_len"]), STOP, PAD)
    assert texts == [reference[:len(text)] for text, reference in zip(texts, case["tokens"])]


def test_the_fixtures_end_texts_at_various_lengths():
    """The references exercise stopping: some texts end early, some run to the maximum length."""
    for case in FIXTURES["cases"].values():
        lengths = {sum(token != PAD for token in row) for row in case["tokens"]}
        assert len(lengths) >= 3, case["arguments"]


@pytest.mark.parametrize("decoding", [Decoding(max_length=16), Decoding(beams=4, beam_groups=2, max_length=12)],
                         ids=["greedy", "beam"])
def test_a_batch_equals_the_same_images_one_at_a_time(model, decoding):
    pixels = tiny_pixels(3)
    prompt = torch.tensor([[START]] * 3)
    batched = decode(next_scores_of(model, pixels), prompt, decoding, STOP, PAD)
    alone = [decode(next_scores_of(model, pixels[i:i + 1]), prompt[i:i + 1], decoding, STOP, PAD)[0]
             for i in range(3)]
    assert len({len(text) for text in batched}) > 1  # texts that end at different steps within the batch
    assert batched == alone


# ---- the tool: layouts, resuming, the command line, a training run on its captions ----

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--max-length", "8", "--batch-size", "2", "--device", "cpu"]  # a tiny CoCa, short captions


def name_captions(pictures):
    """A stand-in captioner: the picture's size, so that each caption says which image it came from."""
    return [f"a picture of {picture.width} by {picture.height}" for picture in pictures]


def dataset_tree(root: Path, images: str, masks: str, count: int = 3) -> Path:
    """`count` dummy pairs in a layout of FOLDER_LAYOUTS, sized 40 + i wide so that captions tell them apart."""
    images_folder, masks_folder = root / images, root / masks
    images_folder.mkdir(parents=True, exist_ok=True)
    masks_folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_pair(images_folder, masks_folder, f"pair_{index}", size=(40 + index, 36))
    return root


@pytest.mark.parametrize("images, masks", FOLDER_LAYOUTS, ids=[f"{i}+{m}" for i, m in FOLDER_LAYOUTS])
def test_each_dataset_layout_is_captioned_image_by_image_and_never_its_masks(tmp_path, images, masks):
    root = dataset_tree(tmp_path / "data", images, masks)
    layout = find_layout(root)
    assert (layout.images_folder, layout.masks_folder) == (root / images, root / masks)
    out = tmp_path / "captions.jsonl"
    caption_folder(root, out, name_captions, batch_size=2, progress=False)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    folder = "" if images == "." else f"{images}/"
    assert [line["image"] for line in lines] == [f"{folder}pair_{index}.jpg" for index in range(3)]
    assert [line["caption"] for line in lines] == [f"a picture of {40 + index} by 36" for index in range(3)]
    assert missing_captions(out, root) == ([], 3)
    dataset = SalientFolderDataset(root, size=32, captions=load_captions(out))  # what training reads
    assert [pair[1].name for pair in dataset.pairs] == [f"pair_{index}.png" for index in range(3)]
    assert dataset.problems() == []


def test_the_check_names_each_image_without_a_caption(tmp_path, capsys):
    root = dataset_tree(tmp_path / "data", "DUTS-TR-Image", "DUTS-TR-Mask")
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"image": "DUTS-TR-Image/pair_1.jpg", "caption": "a box"}\n')
    assert captions_main(["--check", str(captions), str(root)]) == 1
    out, error = capsys.readouterr()
    assert out.split() == [str(root / "DUTS-TR-Image" / "pair_0.jpg"), str(root / "DUTS-TR-Image" / "pair_2.jpg")]
    assert "2 of 3 image(s)" in error
    captions.write_text("".join(f'{{"image": "pair_{index}", "caption": "a box"}}\n' for index in range(3)))
    assert captions_main(["--check", str(captions), str(root)]) == 0


def test_a_torn_last_line_is_cut_and_its_image_captioned_again(tmp_path, capsys):
    root = dataset_tree(tmp_path / "data", "images", "masks")
    out = tmp_path / "captions.jsonl"
    out.write_text('{"image": "images/pair_0.jpg", "caption": "kept"}\n{"image": "images/pair_1.jp')
    run = caption_folder(root, out, name_captions, batch_size=2, progress=False)
    assert (run.captioned, run.already) == (2, 1)
    assert [json.loads(line)["caption"] for line in out.read_text().splitlines()] == [
        "kept", "a picture of 41 by 36", "a picture of 42 by 36"]
    assert "cut short" in capsys.readouterr().err


def test_a_whole_last_line_without_its_newline_is_kept(tmp_path):
    root = dataset_tree(tmp_path / "data", "images", "masks")
    out = tmp_path / "captions.jsonl"
    out.write_text('{"image": "images/pair_0.jpg", "caption": "written by hand"}')
    assert caption_folder(root, out, name_captions, batch_size=2, progress=False).already == 1
    assert len(load_captions(out)) == 3 and load_captions(out)["pair_0"] == ["written by hand"]


def test_an_unreadable_image_is_reported_on_one_line_and_left_out(tmp_path, capsys):
    root = dataset_tree(tmp_path / "data", "images", "masks")
    (root / "images" / "pair_1.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    run = caption_folder(root, tmp_path / "captions.jsonl", name_captions, batch_size=2, progress=False)
    assert (run.captioned, run.unreadable) == (2, 1)
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "pair_1.jpg" in skipped[0]


@pytest.mark.parametrize("flags, message", [
    (["--weights", "{tmp}/nowhere.pt"], "no CoCa weights at"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--beams", "4", "--beam-groups", "3"], "--beams 4 cannot be split into --beam-groups 3"),
    (["--max-length", "3"], "--max-length must exceed 5 tokens"),
    (["--repetition-penalty", "0"], "--repetition-penalty must be a finite number > 0"),
    (["--model", "ViT-B-32"], "is not an open_clip CoCa model"),
    (["--max-length", "80"], "at most 76 tokens"),
    (["--prefix", "a " * 40], "leaves no room"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    register()
    root = dataset_tree(tmp_path / "data", "images", "masks")
    weights = save_tiny_coca(tmp_path / "coca_tiny.pt")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    code = captions_main([str(root), "--out", str(tmp_path / "c.jsonl"), "--weights", str(weights), "--model",
                          "coca_tiny", *QUICK, *flags])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and message in error, error
    assert not (tmp_path / "c.jsonl").exists()


def test_the_missing_weights_error_says_where_to_get_them():
    from salient_outpaint.data.captions.coca import missing_weights_message
    message = missing_weights_message("coca_ViT-L-14", Path("w.bin"))
    assert "https://huggingface.co/laion/CoCa-ViT-L-14-laion2B-s13B-b90k" in message and "--weights" in message


@pytest.mark.slow
def test_a_kill_at_a_random_moment_then_a_rerun_leaves_one_caption_per_image(tmp_path):
    root = dataset_tree(tmp_path / "data", "im", "gt", count=8)
    weights = save_tiny_coca(tmp_path / "coca_tiny.pt")
    out = tmp_path / "captions.jsonl"
    command = [sys.executable, "-c", "import sys; from tests.fixtures.coca_tiny import register; register(); "
               "from salient_outpaint.data.captions.command import main; sys.exit(main(sys.argv[1:]))",
               str(root), "--out", str(out), "--weights", str(weights), "--model", "coca_tiny", *QUICK,
               "--batch-size", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not (out.is_file() and out.stat().st_size):  # the first captions are in
        time.sleep(0.05)
    delay = random.uniform(0, 1)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_with = len(out.read_text().splitlines())
    finish = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    images = [json.loads(line)["image"] for line in out.read_text().splitlines()]  # every line parses
    assert sorted(images) == [f"im/pair_{index}.jpg" for index in range(8)], (delay, killed_with)


@pytest.mark.slow
def test_captions_from_the_tool_train_a_toy_folder(tmp_path, capsys):
    """docs/make_toy_folder.py's folder without its captions: the tool captions it, train.py runs on them."""
    folder = tmp_path / "toy_folder"
    subprocess.run([sys.executable, str(ROOT / "docs" / "make_toy_folder.py"), str(folder), "4", "64"], check=True)
    (folder / "captions.jsonl").unlink()
    register()
    weights = save_tiny_coca(tmp_path / "coca_tiny.pt")
    assert captions_main([str(folder), "--out", str(folder / "captions.jsonl"), "--weights", str(weights),
                          "--model", "coca_tiny", *QUICK]) == 0
    assert sorted(load_captions(folder / "captions.jsonl")) == [f"{index:04d}" for index in range(4)]
    assert captions_main(["--check", str(folder / "captions.jsonl"), str(folder)]) == 0
    capsys.readouterr()
    code = train_cli.main(["--batch-size", "2", "--steps", "2", "--log-every", "1", "--data",
                           f"salient:{folder}:{folder / 'captions.jsonl'}", "--out-dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) >= 2
