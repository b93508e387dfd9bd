"""Tar shards (data/shards.py, data/pack.py) and DataLoader workers (training/batches.py): packing,
streaming every sample once per epoch across processes and workers, batches that do not depend on the
worker count."""
import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import train as train_cli
from salient_outpaint.data import pack
from salient_outpaint.data.check import DataCheckError, check_data
from salient_outpaint.data.shards import ShardDataset
from salient_outpaint import distributed
from salient_outpaint.training.batches import StreamedMicroBatches
from salient_outpaint.training.loop import Trainer
from salient_outpaint.training.validation import dataset_items
from tests.conftest import salient_folder, save_as_stored, take_steps, toy_config

ITEMS = 11


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[str, object]:
    """11 captioned folder images (the caption names the image) and 3 toy scenes in shards of 3."""
    tmp_path = tmp_path_factory.mktemp("shards")
    root = salient_folder(tmp_path / "folder", count=ITEMS - 3)
    captions = tmp_path / "captions.jsonl"
    captions.write_text("".join(json.dumps({"image": f"img{index}.jpg", "caption": f"image {index}"}) + "\n"
                                for index in range(ITEMS - 3)))
    assert pack.main(["pack", "--data", f"salient:{root}:{captions}", "toy:3", "--out", str(tmp_path / "out"),
                        "--shard-size", "3", "--toy-resolution", "32"]) == 0
    return f"shards:{tmp_path}/out/shard-{{000000..000003}}.tar", tmp_path


def test_pack_writes_every_item_once_in_webdataset_members(packed, capsys):
    spec, tmp_path = packed
    paths = sorted((tmp_path / "out").glob("*.tar"))
    assert [path.name for path in paths] == [f"shard-{index:06d}.tar" for index in range(4)]
    names = [name for path in paths for name in tarfile.open(path).getnames()]
    assert len(names) == 3 * ITEMS
    assert sorted(name for name in names if name.endswith(".captions.json")) == \
        [f"{index:09d}.captions.json" for index in range(ITEMS)]
    suffixes = {name.split(".", 1)[1] for name in names}
    assert suffixes == {"jpg", "png", "mask.png", "captions.json"}
    dataset = ShardDataset(spec.removeprefix("shards:"), size=32)
    assert len(dataset) == ITEMS and dataset.counts == [3, 3, 3, 2]
    assert check_data(dataset, (spec,))


def test_pack_help_and_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        pack.main(["pack", "--help"])
    assert exit_.value.code == 0 and "--shard-size" in capsys.readouterr().out
    documented = subprocess.run([sys.executable, "-m", "salient_outpaint.data.shards", "pack", "--help"],
                                cwd=Path(__file__).parent.parent, capture_output=True, text=True)
    assert documented.returncode == 0 and "--shard-size" in documented.stdout
    root = salient_folder(tmp_path / "folder", count=2)
    (root / "masks" / "img1.png").unlink()
    assert pack.main(["pack", "--data", f"salient:{root}", "--out", str(tmp_path / "out")]) == 2
    assert "img1.png: the mask is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def captions_of(batches) -> list[str]:
    return [caption for batch in batches for caption in batch["caption"]]


def stream(dataset, config, rank, world_size, workers, start, micro_batches) -> list[dict]:
    loader = DataLoader(StreamedMicroBatches(dataset, config, rank, world_size, start), batch_size=None,
                        num_workers=workers)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == micro_batches:
            return batches


def test_two_processes_with_two_workers_read_every_sample_exactly_once_per_epoch(packed, tmp_path):
    spec, _ = packed
    dataset = ShardDataset(spec.removeprefix("shards:"), size=32, seed=5)
    config = toy_config(tmp_path, data=(spec,), batch_size=1, seed=5)
    for epoch in range(2):
        seen = []
        for rank in range(2):
            before = sum(dataset.counts[shard] for earlier in range(epoch)
                         for shard in dataset.epoch_shards(earlier, rank, 2))
            mine = sum(dataset.counts[shard] for shard in dataset.epoch_shards(epoch, rank, 2))
            batches = stream(dataset, config, rank, 2, workers=2, start=before, micro_batches=mine)
            seen += captions_of(batches)
        folder_captions = sorted(caption for caption in seen if caption.startswith("image "))
        assert folder_captions == sorted(f"image {index}" for index in range(ITEMS - 3)), f"epoch {epoch}"
        assert len(seen) == ITEMS


def test_shard_batches_do_not_depend_on_the_workers_and_a_resume_skips_to_its_batch(packed, tmp_path):
    spec, _ = packed
    dataset = ShardDataset(spec.removeprefix("shards:"), size=32, seed=5)
    config = toy_config(tmp_path, data=(spec,), batch_size=2, seed=5)
    alone = stream(dataset, config, rank=1, world_size=2, workers=0, start=0, micro_batches=9)
    shared = stream(dataset, config, rank=1, world_size=2, workers=2, start=0, micro_batches=9)
    resumed = stream(dataset, config, rank=1, world_size=2, workers=2, start=5, micro_batches=4)
    for batch, other in zip(alone, shared):
        assert torch.equal(batch["image"], other["image"]) and batch["caption"] == other["caption"]
    for batch, other in zip(alone[5:], resumed):
        assert torch.equal(batch["image"], other["image"]) and torch.equal(batch["mask"], other["mask"])
    assert len({caption for caption in captions_of(alone)}) > 3  # 18 reads cross epochs: shards 3 times over


def test_damaged_shards_are_listed_by_the_data_check(packed, tmp_path):
    spec, packed_dir = packed
    broken = tmp_path / "broken"
    broken.mkdir()
    first = (packed_dir / "out" / "shard-000000.tar").read_bytes()
    (broken / "cut.tar").write_bytes(first[:700])  # inside the first member
    with tarfile.open(broken / "incomplete.tar", "w") as archive:
        with tarfile.open(packed_dir / "out" / "shard-000001.tar") as source:
            for member in source.getmembers():
                if not member.name.endswith(".mask.png"):
                    archive.addfile(member, source.extractfile(member))
    problems = []
    for name in ("cut.tar", "incomplete.tar"):
        try:
            check_data(ShardDataset(str(broken / name), size=32), ("shards",))
        except DataCheckError as error:
            problems.append(str(error))
    assert len(problems) == 2
    assert "found 1 problem(s)" in problems[0] and "cut.tar: not a readable tar file" in problems[0]
    assert "found 3 problem(s)" in problems[1] and "expected one image, mask.png and captions.json" in problems[1]


def test_training_on_shards_with_workers(packed, tmp_path, capsys):
    spec, _ = packed
    out_dir = tmp_path / "run"
    assert train_cli.main(["--data", spec, "--batch-size", "2", "--steps", "2", "--num-workers", "2",
                           "--out-dir", str(out_dir)]) == 0
    assert "data check: no problems in shards:" in capsys.readouterr().err
    assert [json.loads(line)["step"] for line in (out_dir / "log.jsonl").read_text().splitlines()] == [2]
    validation = dataset_items(ShardDataset(spec.removeprefix("shards:"), size=32))  # 3 of the first shard, 1 of the second
    assert len(validation) == 4 and validation[0]["image"].shape == (3, 32, 32)


def test_two_workers_give_the_losses_of_none(tmp_path):
    """The batches are read by other processes but are the same tensors, so the losses agree to
    float rounding (we see them equal); a different batch moves the loss by ~1e-2."""
    config = toy_config(tmp_path, data=("toy:16",), steps=3)
    alone = Trainer(config, distributed.single_process())
    with_workers = Trainer(replace(config, num_workers=2), distributed.single_process())
    for batch, other in zip(alone.batches(0), with_workers.batches(0)):
        assert torch.equal(batch[0]["image"], other[0]["image"]) and batch[0]["caption"] == other[0]["caption"]
    assert take_steps(with_workers, 3) == pytest.approx(take_steps(alone, 3), rel=1e-6)


def test_shard_members_are_read_as_image_files_are_upright_by_exif_and_16_bit_masks_at_full_depth(tmp_path):
    """A phone JPEG (pixels stored turned, EXIF orientation 6) and a 16-bit PNG mask, white above and a
    quarter white below: the data check sees matching upright sizes, and training gets the picture
    upright (red on top) and the mask white above only (an 8-bit conversion clips 16384 to white)."""
    import io

    from PIL import Image

    upright = torch.zeros(3, 40, 24, dtype=torch.uint8)
    upright[0, :20], upright[2, 20:] = 255, 255  # red above, blue below
    photo = io.BytesIO()
    save_as_stored(upright, photo, 6, format="JPEG", quality=95)
    mask = io.BytesIO()
    Image.fromarray(np.repeat(np.array([65535, 16384], dtype=np.uint16), 20)[:, None].repeat(24, 1)).save(
        mask, format="PNG")
    pack.write_shard(tmp_path / "shard-000000.tar", [(0, ("jpg", photo.getvalue(), mask.getvalue(), ["a"]))])

    dataset = ShardDataset(str(tmp_path / "shard-000000.tar"), size=16)
    assert dataset.problems() == []
    item = dataset.first_items(1)[0]
    image = (item["image"] + 1) / 2
    assert image[0, 0].mean() > 0.8 and image[2, 0].mean() < 0.2  # top row red
    assert image[2, -1].mean() > 0.8 and image[0, -1].mean() < 0.2  # bottom row blue
    assert item["mask"][0, 0].mean() > 0.99 and item["mask"][0, -1].mean() < 0.01
