"""Training datasets: salient-object folders, COCO with masks, captions files, mixtures, augmentation,
the error messages a user sees (train.py's included, before step 0), and one training step on a folder."""
import json
import math

import pytest
import torch
from PIL import Image

import train as train_cli
from salient_outpaint.data.augment import augment, item_generator
from salient_outpaint.data.check import LISTED, DataCheckError, check_data
from salient_outpaint.data.datasets import CocoDataset, MixtureDataset, SalientFolderDataset, load_captions
from salient_outpaint.data.specs import build_dataset
from salient_outpaint import distributed
from salient_outpaint.training.config import TrainConfig
from salient_outpaint.training.loop import Trainer
from tests.conftest import salient_folder, take_steps, write_pair

COMMON = ["--batch-size", "2", "--steps", "1", "--log-every", "1"]  # one quick step; each test adds --data and --out-dir


def red_pixels(image):
    """(3, H, W) in [-1, 1] -> (H, W) bool: where the red object is."""
    return (image[0] > 0) & (image[2] < 0)


def test_salient_folder_items_have_the_training_format(tmp_path):
    dataset = SalientFolderDataset(salient_folder(tmp_path), size=32, seed=1)
    assert len(dataset) == 4
    item = dataset[2]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["mask"].shape == (1, 32, 32) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["caption"] == ""


def test_an_item_is_a_pure_function_of_seed_epoch_and_index(tmp_path):
    root = salient_folder(tmp_path)
    dataset = SalientFolderDataset(root, size=24, seed=1)
    dataset.set_epoch(3)
    first = dataset[2]
    images_per_epoch = []
    for epoch in range(8):
        dataset.set_epoch(epoch)
        images_per_epoch.append(dataset[2]["image"])
    again = SalientFolderDataset(root, size=24, seed=1)
    again.set_epoch(3)
    assert torch.equal(again[2]["image"], first["image"]) and torch.equal(again[2]["mask"], first["mask"])
    assert torch.equal(images_per_epoch[3], first["image"])  # visiting other epochs changed nothing
    assert len({tuple(image.flatten().tolist()) for image in images_per_epoch}) > 2  # crops change by epoch
    other_seed = SalientFolderDataset(root, size=24, seed=2)
    assert any(not torch.equal(other_seed[index]["image"], SalientFolderDataset(root, size=24, seed=1)[index]["image"])
               for index in range(4))


def orient(tensor, flip):
    return tensor.flip(-1) if flip else tensor


def test_augment_crops_without_squashing_and_binarises_the_mask():
    # Shorter side already equals the size: no resize, so the output must be an exact window of the
    # input (perhaps mirrored), never the whole image squeezed into a square.
    image = torch.linspace(-1, 1, 3 * 32 * 40).reshape(3, 32, 40)
    soft_mask = torch.zeros(1, 32, 40)
    soft_mask[..., 5:] = 0.4
    soft_mask[..., 20:] = 0.6
    lefts = set()
    for seed in range(12):
        out_image, out_mask = augment(image, soft_mask, 32, torch.Generator().manual_seed(seed))
        assert out_image.shape == (3, 32, 32) and out_mask.shape == (1, 32, 32)
        match = [(left, flip) for left in range(9) for flip in (False, True)
                 if torch.allclose(out_image, orient(image[..., left:left + 32], flip), atol=1e-5)]
        assert len(match) == 1
        left, flip = match[0]
        lefts.add(left)
        assert torch.equal(out_mask, orient((soft_mask[..., left:left + 32] >= 0.5).float(), flip))
    assert len(lefts) > 2


def test_augment_resizes_the_shorter_side_and_keeps_object_and_mask_together():
    image = -torch.ones(3, 90, 150)
    image[0, 20:50, 100:130] = 1  # a red block at the right: a flip of one but not the other would show
    image[2] = torch.where(image[0] > 0, -1.0, 1.0)
    mask = torch.zeros(1, 90, 150)
    mask[0, 20:50, 100:130] = 1
    flipped = 0
    for seed in range(16):
        out_image, out_mask = augment(image, mask, 30, torch.Generator().manual_seed(seed))
        assert out_image.shape == (3, 30, 30)
        if out_mask.sum() > 0:
            agreement = (red_pixels(out_image) == out_mask[0].bool()).float().mean()
            assert agreement > 0.97
            # the block is 10 x 10 once 90 -> 30; the crop may cut it, never enlarge it
            assert out_mask.sum() <= 100 + 20
            flipped += int(out_mask[0, :, :15].sum() > out_mask[0, :, 15:].sum())
    assert flipped > 0


def test_item_generators_differ_for_neighbouring_epochs_and_indices():
    draws = {(epoch, index): torch.rand(4, generator=item_generator(0, epoch, index))
             for epoch in range(3) for index in range(3)}
    assert len({tuple(draw.tolist()) for draw in draws.values()}) == len(draws)
    assert torch.equal(draws[(1, 2)], torch.rand(4, generator=item_generator(0, 1, 2)))


def test_folder_object_stays_under_its_mask_in_every_epoch(tmp_path):
    dataset = SalientFolderDataset(salient_folder(tmp_path, count=1), size=32)
    for epoch in range(8):
        dataset.set_epoch(epoch)
        item = dataset[0]
        assert (red_pixels(item["image"]) == item["mask"][0].bool()).float().mean() > 0.95


@pytest.mark.parametrize("images,masks", [("DUTS-TR-Image", "DUTS-TR-Mask"), ("DUTS-TE-Image", "DUTS-TE-Mask"),
                                          ("im", "gt")])
def test_duts_and_dis5k_folder_names_are_read(tmp_path, images, masks):
    dataset = SalientFolderDataset(salient_folder(tmp_path, images=images, masks=masks), size=32)
    assert len(dataset) == 4
    for item in (dataset[index] for index in range(4)):  # each object under its mask
        assert (red_pixels(item["image"]) == item["mask"][0].bool()).float().mean() > 0.95


def test_folder_reads_every_image_format_and_skips_other_files(tmp_path):
    root = salient_folder(tmp_path, count=1)
    write_pair(root / "images", root / "masks", "png_one", suffix=".png")
    write_pair(root / "images", root / "masks", "bmp_one", suffix=".BMP")
    (root / "images" / "notes.txt").write_text("not an image")
    (root / "images" / "._img0.jpg").write_bytes(b"macOS metadata")
    assert len(SalientFolderDataset(root, size=32)) == 3


def test_the_data_check_lists_missing_unreadable_and_mis_sized_files_at_once(tmp_path):
    root = salient_folder(tmp_path, count=5)
    (root / "masks" / "img1.png").unlink()
    (root / "images" / "img3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("L", (20, 20), 255).save(root / "masks" / "img2.png")
    (root / "masks" / "img4.png").write_bytes((root / "masks" / "img4.png").read_bytes()[:30])  # cut short
    dataset = SalientFolderDataset(root, size=32)  # building looks at names only
    with pytest.raises(DataCheckError) as error:
        check_data(dataset, (f"salient:{root}",))
    lines = str(error.value).splitlines()
    assert "found 4 problem(s) in salient:" in lines[0] and "--skip-data-check" in lines[0]
    assert any(line.strip().endswith("img1.png: the mask is missing") for line in lines)
    assert any("img3.jpg: cannot read the image" in line for line in lines)
    assert any("img2.png: the mask is 20x20 (width x height) but its image img2.jpg is 48x40" in line for line in lines)
    assert any("img4.png: cannot read the mask" in line for line in lines)


def test_the_data_check_counts_what_it_does_not_list(tmp_path):
    root = salient_folder(tmp_path, count=LISTED + 5)
    for mask in (root / "masks").iterdir():
        mask.unlink()
    with pytest.raises(DataCheckError, match=rf"found {LISTED + 5} problem\(s\)") as error:
        check_data(SalientFolderDataset(root, size=32), ("salient:x",))
    assert len(str(error.value).splitlines()) == 1 + LISTED + 1
    assert str(error.value).splitlines()[-1].strip() == "... and 5 more"


def test_folder_layout_errors_say_what_was_expected(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="not a salient-object folder: expected .*images/ \\+ masks/"):
        SalientFolderDataset(tmp_path, size=32)
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        SalientFolderDataset(tmp_path, size=32)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SalientFolderDataset(tmp_path / "nowhere", size=32)


def test_a_corrupt_image_is_named(tmp_path):
    root = salient_folder(tmp_path)
    (root / "images" / "img3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    dataset = SalientFolderDataset(root, size=32)
    with pytest.raises(ValueError, match="cannot read the image .*img3.jpg"):
        dataset[3]


def test_a_mask_of_another_size_is_named(tmp_path):
    root = salient_folder(tmp_path, count=1)
    Image.new("L", (20, 20), 255).save(root / "masks" / "img0.png")
    with pytest.raises(ValueError, match=r"img0.png is 20x20 \(width x height\) but its image .*img0.jpg is 48x40"):
        SalientFolderDataset(root, size=32)[0]


def test_captions_from_jsonl_and_csv_are_keyed_by_stem(tmp_path):
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text('{"image": "img0.jpg", "caption": " a red box "}\n\n'
                     '{"file_name": "DUTS-TR-Image/img1.png", "text": "b"}\n'
                     '{"image": "img.v2", "caption": "dotted name, no suffix"}\n', encoding="utf-8")
    assert load_captions(jsonl) == {"img0": ["a red box"], "img1": ["b"], "img.v2": ["dotted name, no suffix"]}
    table = tmp_path / "captions.csv"
    table.write_text('\ufeffimage,caption\nimg0.jpg,"a red box, on blue"\nimg0,second\nimg1.jpg,café\n',
                     encoding="utf-8")
    assert load_captions(table) == {"img0": ["a red box, on blue", "second"], "img1": ["café"]}


def test_bad_captions_lines_are_named_by_line_number(tmp_path):
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text('{"image": "img0.jpg", "caption": "ok"}\n\n{"image": "img1.jpg"}\n')
    with pytest.raises(ValueError, match="captions.jsonl line 3 needs an image name .* and a caption"):
        load_captions(jsonl)
    jsonl.write_text('{"image": "img0.jpg", broken\n')
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        load_captions(jsonl)
    jsonl.write_text('["img0.jpg", "a list"]\n')
    with pytest.raises(ValueError, match="line 1 is not a JSON object"):
        load_captions(jsonl)
    table = tmp_path / "captions.csv"
    table.write_text("image,caption\nimg0.jpg,fine\nimg1.jpg\n")
    with pytest.raises(ValueError, match="captions.csv line 3 needs"):
        load_captions(table)
    table.write_text("img0.jpg,no header\n")
    with pytest.raises(ValueError, match="needs a header line"):
        load_captions(table)
    with pytest.raises(FileNotFoundError, match="captions file .*missing.jsonl does not exist"):
        load_captions(tmp_path / "missing.jsonl")


def test_salient_folder_with_captions_needs_one_per_image(tmp_path):
    root = salient_folder(tmp_path / "data", count=2)
    captions = {"img0": ["a red box"], "img1": ["another red box"]}
    assert SalientFolderDataset(root, size=32, captions=captions)[1]["caption"] == "another red box"
    assert SalientFolderDataset(root, size=32, captions={"img0": "x", "img1": "plain string"})[1]["caption"] == \
        "plain string"
    with pytest.raises(ValueError, match="1 of 2 image.* no caption.*img1.jpg"):
        SalientFolderDataset(root, size=32, captions={"img0": ["a red box"]})


def coco(tmp_path):
    images, masks = tmp_path / "train2017", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(3):
        write_pair(images, masks, f"{index:012d}")
    annotations = {"images": [{"id": 10 + index, "file_name": f"{index:012d}.jpg"} for index in range(3)],
                   "annotations": [{"image_id": 10, "caption": "first"}, {"image_id": 10, "caption": "second\n"},
                                   {"image_id": 11, "caption": "one"}, {"image_id": 12, "caption": "two"}]}
    (tmp_path / "captions.json").write_text(json.dumps(annotations))
    return images, tmp_path / "captions.json", masks


def test_coco_draws_one_of_an_images_captions_per_epoch(tmp_path):
    dataset = CocoDataset(*coco(tmp_path), size=32)
    assert len(dataset) == 3
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        seen.add(dataset[0]["caption"])
    assert seen == {"first", "second"}
    assert dataset[1]["caption"] == "one" and dataset[2]["caption"] == "two"
    assert dataset[0]["mask"].sum() > 0


def test_coco_errors_name_what_is_missing(tmp_path):
    images, captions, masks = coco(tmp_path)
    (masks / "000000000002.png").unlink()
    (images / "000000000001.jpg").unlink()
    with pytest.raises(DataCheckError, match=r"2 problem\(s\)") as error:
        check_data(CocoDataset(images, captions, masks, size=32), ("coco",))
    assert "000000000002.png: the mask is missing" in str(error.value)
    assert "000000000001.jpg: the image is missing" in str(error.value)
    for image in images.iterdir():
        image.unlink()
    with pytest.raises(FileNotFoundError, match=r"the first images listed in .* are not in .*train2017 .*that split"):
        CocoDataset(images, captions, masks, size=32)
    captions.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a COCO captions file"):
        CocoDataset(images, captions, masks, size=32)


class Recorder(torch.utils.data.Dataset):
    """Returns its name and the epoch it was read at."""

    def __init__(self, name, size=5):
        self.name, self.size, self.epoch = name, size, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return {"caption": self.name, "epoch": self.epoch, "index": index}


def test_mixture_follows_its_weights_and_is_reproducible():
    mixture = MixtureDataset([Recorder("a"), Recorder("b")], [0.8, 0.2], length=2000, seed=0)
    draws = [mixture[index]["caption"] for index in range(2000)]
    share = draws.count("a") / len(draws)
    assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 2000)  # four standard deviations
    mixture.set_epoch(5)
    mixture[7]
    mixture.set_epoch(0)
    assert draws[:50] == [mixture[index]["caption"] for index in range(50)]
    same = MixtureDataset([Recorder("a"), Recorder("b")], [4.0, 1.0], length=2000, seed=0)
    assert [same[index]["index"] for index in range(50)] == [mixture[index]["index"] for index in range(50)]
    mixture.set_epoch(1)
    assert [mixture[index]["caption"] for index in range(50)] != draws[:50]


def test_mixture_draws_of_one_item_get_fresh_augmentation(tmp_path):
    single = SalientFolderDataset(salient_folder(tmp_path, count=1), size=24)
    mixture = MixtureDataset([single, Recorder("other", size=1)], [3.0, 1.0], length=40, seed=0)
    mixture.set_epoch(2)
    images = [item["image"] for item in (mixture[index] for index in range(40)) if "image" in item]
    assert len(images) > 10
    assert len({tuple(image.flatten().tolist()) for image in images}) > 2
    epochs = {mixture[index]["epoch"] for index in range(40) if mixture[index]["caption"] == "other"}
    assert len(epochs) > 1 and all(epoch >= 2 * 40 for epoch in epochs)


def test_mixture_rejects_bad_weights():
    with pytest.raises(ValueError, match="one positive weight per dataset"):
        MixtureDataset([Recorder("a"), Recorder("b")], [1.0, 0.0], length=10)
    with pytest.raises(ValueError, match="one positive weight per dataset"):
        MixtureDataset([Recorder("a"), Recorder("b")], [1.0], length=10)
    with pytest.raises(ValueError, match="one positive weight per dataset"):
        MixtureDataset([Recorder("a")], [float("nan")], length=10)
    with pytest.raises(ValueError, match="hold no items"):
        MixtureDataset([Recorder("a"), Recorder("b", size=0)], [1.0, 1.0], length=10)


def test_specs_build_salient_coco_and_mixtures(tmp_path):
    root = salient_folder(tmp_path / "sal", count=2)
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"image": "img0.jpg", "caption": "zero"}\n{"image": "img1.jpg", "caption": "one"}\n')
    single = build_dataset((f"salient:{root}:{captions}",), (), size=32, seed=0)
    assert isinstance(single, SalientFolderDataset) and single[1]["caption"] == "one"
    (tmp_path / "coco_root").mkdir()
    images, coco_captions, masks = coco(tmp_path / "coco_root")
    assert isinstance(build_dataset((f"coco:{images}:{coco_captions}:{masks}",), (), size=32, seed=0), CocoDataset)
    mixture = build_dataset((f"salient:{root}", f"coco:{images}:{coco_captions}:{masks}"), (2.0, 1.0), size=32,
                            seed=0)
    assert isinstance(mixture, MixtureDataset)
    mixture.set_epoch(1)
    item = mixture[0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    with pytest.raises(ValueError, match="cannot read the dataset spec"):
        build_dataset(("coco:only-one-part",), (), size=32, seed=0)


def test_the_trainer_takes_a_step_on_a_salient_folder(tmp_path):
    """The step reads the folder's pictures, each object under its mask, and trains the ControlNet."""
    root = salient_folder(tmp_path / "data")
    config = TrainConfig(stage="controlnet", preset="toy", data=(f"salient:{root}",), out_dir=str(tmp_path / "run"),
                         resolution=64, steps=1, batch_size=2)
    trainer = Trainer(config, distributed.single_process())
    [batch] = next(trainer.batches(0))
    assert batch["image"].shape == (2, 3, 64, 64)
    for image, mask in zip(batch["image"], batch["mask"]):
        assert (red_pixels(image) == mask[0].bool()).float().mean() > 0.95
    before = trainer.networks.controlnet.controlnet_mid_block.weight.clone()
    [loss] = take_steps(trainer, 1)
    assert math.isfinite(loss) and not torch.equal(before, trainer.networks.controlnet.controlnet_mid_block.weight)


@pytest.mark.parametrize("spec,message", [
    ("toy:0", "--data toy:0: toy:N needs a whole number of scenes N of at least 1"),
    ("toy:many", "--data toy:many: toy:N needs a whole number"),
    ("shards:{tmp}/none-*.tar", "matches no files"),
])
def test_impossible_data_specs_are_one_line_errors(tmp_path, capsys, spec, message):
    code = train_cli.main([*COMMON, "--data", spec.format(tmp=tmp_path), "--out-dir", str(tmp_path / "run")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1 and message in error, error


def test_an_empty_folder_is_a_one_line_error(tmp_path, capsys):
    root = salient_folder(tmp_path / "data", count=0)
    assert train_cli.main([*COMMON, "--data", f"salient:{root}", "--out-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "holds no images" in error, error


def test_a_bad_dataset_stops_the_run_before_step_0_listing_its_problems(tmp_path, capsys):
    root = salient_folder(tmp_path / "data", count=3)
    (root / "masks" / "img0.png").unlink()
    (root / "images" / "img2.jpg").write_bytes(b"not an image")
    out_dir = tmp_path / "run"
    assert train_cli.main([*COMMON, "--data", f"salient:{root}", "--out-dir", str(out_dir)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: the data check found 2 problem(s)")
    assert "img0.png: the mask is missing" in error and "img2.jpg: cannot read the image" in error
    assert not (out_dir / "log.jsonl").exists() and not list(out_dir.glob("checkpoint_*"))
