"""Training datasets: salient-object folders, COCO with masks, captions files, mixtures, errors."""
import json
import math

import pytest
import torch
from PIL import Image

from salient_outpaint.data.datasets import CocoDataset, MixtureDataset, SalientFolderDataset, load_captions
from salient_outpaint.data.specs import build_dataset
from salient_outpaint.training import distributed
from salient_outpaint.training.config import TrainConfig
from salient_outpaint.training.loop import Trainer


def write_pair(images, masks, name, size=(48, 40), suffix=".jpg"):
    """A red square object on blue, and its mask."""
    width, height = size
    image = Image.new("RGB", size, (0, 0, 255))
    mask = Image.new("L", size, 0)
    box = (width // 4, height // 4, width // 4 + 12, height // 4 + 12)
    image.paste((255, 0, 0), box)
    mask.paste(255, box)
    image.save(images / f"{name}{suffix}", quality=100)
    mask.save(masks / f"{name}.png")


def salient_folder(root, count=4, images="images", masks="masks"):
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    for index in range(count):
        write_pair(root / images, root / masks, f"img{index}")
    return root


def test_salient_folder_items_are_augmented_aligned_and_reproducible(tmp_path):
    dataset = SalientFolderDataset(salient_folder(tmp_path), size=32, seed=1)
    assert len(dataset) == 4
    item = dataset[2]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32) and item["caption"] == ""
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0} and item["mask"].sum() > 0
    red = (item["image"][0] > 0.5) & (item["image"][2] < -0.5)  # the object's pixels after the crop
    assert (red == item["mask"][0].bool()).float().mean() > 0.95  # image and mask moved together
    assert torch.equal(dataset[2]["image"], item["image"])
    crops = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        crops.add(dataset[2]["image"].sum().item())
    assert len(crops) > 1  # crops and flips change across epochs


def test_duts_folder_names_are_read(tmp_path):
    dataset = SalientFolderDataset(salient_folder(tmp_path, images="DUTS-TR-Image", masks="DUTS-TR-Mask"), size=32)
    assert len(dataset) == 4


def test_a_missing_mask_is_named_when_the_dataset_is_built(tmp_path):
    root = salient_folder(tmp_path)
    (root / "masks" / "img1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) have no mask: img1.jpg \(expected .*img1.png\)"):
        SalientFolderDataset(root, size=32)


def test_a_corrupt_image_is_named(tmp_path):
    root = salient_folder(tmp_path)
    (root / "images" / "img3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = SalientFolderDataset(root, size=32)
    with pytest.raises(ValueError, match="cannot read the image .*img3.jpg"):
        dataset[3]


def test_captions_from_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text('{"image": "img0.jpg", "caption": "a red box"}\n\n{"file_name": "x/img1.png", "text": "b"}\n')
    assert load_captions(jsonl) == {"img0": ["a red box"], "img1": ["b"]}
    table = tmp_path / "captions.csv"
    table.write_text('image,caption\nimg0.jpg,"a red box, on blue"\nimg0.jpg,second\n')
    assert load_captions(table) == {"img0": ["a red box, on blue", "second"]}
    jsonl.write_text('{"image": "img0.jpg", "caption": "ok"}\n{"image": "img1.jpg"}\n')
    with pytest.raises(ValueError, match="line 2 needs"):
        load_captions(jsonl)
    jsonl.write_text('{"image": "img0.jpg", broken\n')
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        load_captions(jsonl)


def test_salient_folder_with_captions_needs_one_per_image(tmp_path):
    root = salient_folder(tmp_path / "data", count=2)
    captions = {"img0": ["a red box"], "img1": ["another red box"]}
    assert SalientFolderDataset(root, size=32, captions=captions)[1]["caption"] == "another red box"
    with pytest.raises(ValueError, match="1 image.* no caption.*img1.jpg"):
        SalientFolderDataset(root, size=32, captions={"img0": ["a red box"]})


def coco(tmp_path):
    images, masks = tmp_path / "train2017", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(3):
        write_pair(images, masks, f"{index:012d}")
    annotations = {"images": [{"id": index, "file_name": f"{index:012d}.jpg"} for index in range(3)],
                   "annotations": [{"image_id": 0, "caption": "first"}, {"image_id": 0, "caption": "second"},
                                   {"image_id": 1, "caption": "one"}, {"image_id": 2, "caption": "two"}]}
    (tmp_path / "captions.json").write_text(json.dumps(annotations))
    return images, tmp_path / "captions.json", masks


def test_coco_draws_one_of_an_images_captions_per_epoch(tmp_path):
    dataset = CocoDataset(*coco(tmp_path), size=32)
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        seen.add(dataset[0]["caption"])
    assert seen == {"first", "second"}
    assert dataset[1]["caption"] == "one"


def test_coco_image_without_a_mask_is_named(tmp_path):
    images, captions, masks = coco(tmp_path)
    (masks / "000000000002.png").unlink()
    with pytest.raises(FileNotFoundError, match="000000000002.jpg"):
        CocoDataset(images, captions, masks, size=32)


class Constant(torch.utils.data.Dataset):
    def __init__(self, name):
        self.name = name

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return 5

    def __getitem__(self, index):
        return {"caption": self.name}


def test_mixture_follows_its_weights_and_is_reproducible():
    mixture = MixtureDataset([Constant("a"), Constant("b")], [0.8, 0.2], length=2000, seed=0)
    draws = [mixture[index]["caption"] for index in range(2000)]
    share = draws.count("a") / len(draws)
    assert abs(share - 0.8) < 3 * math.sqrt(0.8 * 0.2 / 2000) + 0.01
    assert draws[:50] == [mixture[index]["caption"] for index in range(50)]
    with pytest.raises(ValueError, match="positive weight"):
        MixtureDataset([Constant("a"), Constant("b")], [1.0, 0.0], length=10)


def test_specs_build_salient_coco_and_mixtures(tmp_path):
    root = salient_folder(tmp_path / "sal")
    (tmp_path / "coco_root").mkdir()
    images, captions, masks = coco(tmp_path / "coco_root")
    mixture = build_dataset((f"salient:{root}", f"coco:{images}:{captions}:{masks}"), (2.0, 1.0), size=32, seed=0)
    mixture.set_epoch(1)
    assert mixture[0]["image"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="cannot read the dataset spec"):
        build_dataset(("coco:only-one-part",), (), size=32, seed=0)


def test_the_trainer_takes_a_step_on_a_salient_folder(tmp_path):
    root = salient_folder(tmp_path / "data")
    config = TrainConfig(stage="controlnet", preset="toy", data=(f"salient:{root}",), out_dir=str(tmp_path / "run"),
                         resolution=32, steps=1, batch_size=2)
    loss = Trainer(config, distributed.single_process()).step(0)
    assert math.isfinite(loss) and loss > 0
