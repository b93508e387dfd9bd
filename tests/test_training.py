"""The training loop on the TOY configuration: learning, freezing, resume, DDP, errors."""
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import train as train_cli
from salient_outpaint.data.images import load_image, load_mask
from salient_outpaint import distributed
from salient_outpaint.data.synthetic import draw_background
from salient_outpaint.training.loop import Trainer, peak_memory_mb
from salient_outpaint.training.objective import local_gradient_energy, texture_loss
from salient_outpaint.training.state import load_training_state
from salient_outpaint.training.validation import centre_square
from tests.conftest import (SINGLE_THREADED, fit, free_port, take_steps, toy_config,
                            toy_unet_with_and_without_controlnet)

ROOT = Path(__file__).resolve().parents[1]


def snapshot(trainer: Trainer) -> dict:
    return {name: {k: v.clone() for k, v in module.state_dict().items()}
            for name, module in trainer.networks.components().items()}


def test_only_the_controlnet_changes_and_it_starts_as_the_frozen_unet(tmp_path):
    trainer = Trainer(toy_config(tmp_path), distributed.single_process())
    before = snapshot(trainer)

    # Step 0: the zero convolutions make the controlled U-Net equal to the U-Net alone.
    controlled, plain = toy_unet_with_and_without_controlnet(trainer.networks, torch.tensor([7, 700]))
    assert torch.equal(controlled, plain)

    take_steps(trainer, 3)
    after = snapshot(trainer)
    for name in ("unet", "vae", "text_encoder"):
        for key in before[name]:
            assert torch.equal(before[name][key], after[name][key]), f"frozen {name}.{key} changed"
    changed = [key for key in before["controlnet"] if not torch.equal(before["controlnet"][key],
                                                                      after["controlnet"][key])]
    assert any(key.startswith("controlnet_down_blocks") for key in changed)
    assert any(key.startswith("down_blocks") for key in changed)


def test_the_decoder_stage_trains_the_decoder_alone_so_latents_keep_their_meaning(tmp_path):
    trainer = Trainer(toy_config(tmp_path, stage="decoder", init=(str(ROOT / "weights" / "toy" / "vae"),),
                                 texture_weight=1.0), distributed.single_process())
    before = snapshot(trainer)
    take_steps(trainer, 2)
    after = snapshot(trainer)
    for name in ("unet", "text_encoder"):
        assert all(torch.equal(before[name][key], after[name][key]) for key in before[name]), name
    vae_changed = {key.split(".")[0] for key in before["vae"] if not torch.equal(before["vae"][key], after["vae"][key])}
    assert vae_changed == {"decoder", "post_quant_conv"}, vae_changed


def test_the_texture_term_prefers_grains_elsewhere_to_a_blur():
    """What L1 / L2 cannot tell: noise moved by a few pixels has the image's texture, its blur has none.
    The texture term ranks them the other way round from L1."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    moved = images.roll(3, dims=-1)
    blurred = torch.nn.functional.avg_pool2d(images, 5, 1, 2, count_include_pad=False)
    assert (moved - images).abs().mean() > (blurred - images).abs().mean()
    assert texture_loss(moved, images) < 0.1 * texture_loss(blurred, images)
    assert float(texture_loss(images, images)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_the_texture_term_gives_back_detail_that_l1_and_l2_blur(tmp_path):
    """The shipped toy VAE (L1 + L2 only) decodes close-ups (64 px corners of drawings at 256 px) of grass,
    stars and sand blurred. The decoder stage's texture term brings their gradient energy nearer to the
    drawing's than the same steps without it."""
    drawings = torch.stack([draw_background(name, 256, torch.Generator().manual_seed(seed))[:, :64, :64]
                            for name in ("grass", "night", "sand") for seed in range(2)]).clamp(0, 1) * 2 - 1
    base = toy_config(tmp_path, stage="decoder", init=(str(ROOT / "weights" / "toy" / "vae"),),
                      data=("toyzoom:64",), batch_size=8, steps=40, learning_rate=3e-4)
    kept = {}
    for weight in (0.0, 1.0):
        trainer = Trainer(replace(base, texture_weight=weight, out_dir=str(tmp_path / f"w{weight}")),
                          distributed.single_process())
        take_steps(trainer, base.steps)
        vae = trainer.networks.vae
        with torch.no_grad():
            decoded = vae.decode(vae.encode(drawings).mean)
        kept[weight] = float(local_gradient_energy(decoded).mean() / local_gradient_energy(drawings).mean())
    assert abs(1 - kept[1.0]) < 0.5 * abs(1 - kept[0.0]), kept


@pytest.mark.slow
def test_loss_falls_on_a_tiny_synthetic_set(tmp_path):
    """The inpainting U-Net stage learns fast enough to show in a few dozen steps."""
    config = toy_config(tmp_path, stage="unet", data=("toy:16",), steps=60, batch_size=8, learning_rate=2e-3,
                        checkpoint_every=1000, log_every=10)
    fit(Trainer(config, distributed.single_process()))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0], losses


def test_kill_and_resume_gives_identical_parameters(tmp_path):
    straight = toy_config(tmp_path / "straight")
    fit(Trainer(straight, distributed.single_process()))

    crashed = toy_config(tmp_path / "crashed")
    trainer = Trainer(crashed, distributed.single_process())
    real_step = trainer.step

    def step_then_crash(step, micro_batches):
        if step == 3:  # after the checkpoint at step 2, in the middle of the run
            raise KeyboardInterrupt("simulated crash")
        return real_step(step, micro_batches)

    trainer.step = step_then_crash
    with pytest.raises(KeyboardInterrupt):
        fit(trainer)
    assert load_training_state(crashed.out_dir)["step"] == 2
    assert not [p for p in Path(crashed.out_dir).iterdir() if p.name.endswith(".tmp")], "half-written file left"

    fit(Trainer(replace(crashed, resume=True), distributed.single_process()))
    ours = load_file(str(Path(crashed.out_dir) / "weights/controlnet/diffusion_pytorch_model.safetensors"))
    reference = load_file(str(Path(straight.out_dir) / "weights/controlnet/diffusion_pytorch_model.safetensors"))
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    config = toy_config(tmp_path, steps=4, checkpoint_every=2)
    trainer = Trainer(config, distributed.single_process())
    real_forward = trainer.synced_objective.forward
    calls = []

    def forward_going_nan(*args):
        calls.append(1)
        loss = real_forward(*args)
        return loss * float("nan") if len(calls) == 4 else loss  # the 4th call is step 3

    trainer.synced_objective.forward = forward_going_nan
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 3.*--resume"):
        fit(trainer)
    assert load_training_state(config.out_dir)["step"] == 2


def test_cli_reports_a_wrong_init_checkpoint_in_one_line(tmp_path, capsys):
    code = train_cli.main(["--init", str(tmp_path / "missing.safetensors"), "--out-dir", str(tmp_path / "r"),
                           "--data", "toy:4", "--steps", "1"])
    assert code == 2
    assert capsys.readouterr().err.strip().startswith("error: checkpoint file not found")


def test_benchmark_prints_throughput_and_the_peak_memory_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default --out-dir would be
    device = distributed.single_process().device
    peak_before = peak_memory_mb(device)
    assert train_cli.main(["--preset", "toy", "--data", "toy:8", "--batch-size", "2", "--benchmark", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch_size"] == 2 and result["precomputed_latents"] is False
    assert result["samples_per_s"] == pytest.approx(2 / result["seconds_per_step"])
    assert peak_before <= result["peak_memory_mb"] <= peak_memory_mb(device)  # the high-water mark after the steps
    assert not list(tmp_path.iterdir())


DDP_FLAGS = ["--preset", "toy", "--data", "toy:32", "--steps", "3", "--learning-rate", "1e-3", "--seed", "3",
             "--checkpoint-every", "3", "--log-every", "1"]


@pytest.fixture(scope="module")
def one_process_weights(tmp_path_factory) -> dict:
    """The ControlNet after 3 steps of batch 4 on one process, which the multi-process runs must match."""
    out = tmp_path_factory.mktemp("one_process")
    one = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(out), *DDP_FLAGS,
                          "--batch-size", "4"], cwd=ROOT, env=SINGLE_THREADED, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    return torch.load(out / "rank0.pt")


def assert_ranks_match_one_process(out: Path, single: dict) -> None:
    """Both ranks must hold identical weights (DDP), and those must equal a single process with batch 4
    up to float32 reduction order: the gradient is averaged over ranks instead of over the batch, a few
    ulps apart. AdamW divides by the gradient's running RMS, so where a gradient is near zero those ulps
    can move a weight by a visible fraction of lr; we measured at most 1.8e-5 after 3 steps at lr 1e-3
    with one initialisation, and single weights off by 1.5e-4 and 5.4e-4 with others. AdamW moves a weight
    by at most ~lr a step, so: every weight within 3 steps (3e-3), and at most 0.01% of them past a tenth
    of a step (1e-4); a different batch moves nearly every weight by ~lr."""
    rank0, rank1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
    differences = torch.cat([(rank0[key] - single[key]).abs().flatten() for key in rank0])
    assert (differences > 1e-4).float().mean() <= 1e-4, f"{int((differences > 1e-4).sum())} weights past 1e-4"
    assert differences.max() <= 3e-3, f"max difference {differences.max():.2e}"


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(tmp_path, one_process_weights):
    """gloo on CPU, 2 processes of batch 2 against 1 of batch 4."""
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "two"),
                          *DDP_FLAGS, "--batch-size", "2"], cwd=ROOT, env=SINGLE_THREADED, capture_output=True,
                         text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert_ranks_match_one_process(tmp_path / "two", one_process_weights)


@pytest.mark.slow
def test_two_nodes_of_one_process_match_one_process(tmp_path, one_process_weights):
    """Multi-node torchrun simulated on one machine: two launchers (--nnodes=2 --nproc_per_node=1) meet
    through c10d rendezvous on localhost, as two machines would meet at the first one's address; they
    share the output folder as nodes share a network filesystem."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
              "--rdzv_backend=c10d", f"--rdzv_endpoint=localhost:{free_port()}", "--rdzv_id=two-nodes",
              str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "two"), *DDP_FLAGS, "--batch-size", "2"]
    nodes = [subprocess.Popen(launch, cwd=ROOT, env=SINGLE_THREADED, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for node in nodes:
        _, stderr = node.communicate()
        assert node.returncode == 0, stderr[-3000:]
    assert_ranks_match_one_process(tmp_path / "two", one_process_weights)


@pytest.mark.parametrize("stage", ["vae", "decoder", "controlnet"])
def test_validation_grids_are_written_and_training_mode_is_restored(tmp_path, stage):
    config = toy_config(tmp_path, stage=stage, steps=2, validate_every=2, checkpoint_every=2)
    trainer = Trainer(config, distributed.single_process())
    fit(trainer)
    grid = Path(config.out_dir) / "validation" / "step_0000002.png"
    assert grid.is_file()
    trained = trainer.trained_networks["vae" if stage == "decoder" else stage]
    frozen = {"encoder", "quant_conv"} if stage == "decoder" else set()  # the decoder stage keeps the encoder
    for name, part in trained.named_children():
        learns = name not in frozen
        assert part.training == learns and all(p.requires_grad == learns for p in part.parameters()), name
    unet = trainer.networks.unet
    assert not unet.training and not any(p.requires_grad for p in unet.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_runs_keep_frozen_networks_in_half_track_fp32_and_resume_exactly(tmp_path, precision):
    """--precision X --frozen-dtype X on the shipped toy weights: the frozen networks are stored in X,
    the ControlNet (and so its AdamW state) stays fp32, fp16 scales the loss. The first losses stay
    within 2% of an fp32 run (we measured at most 0.2%: bf16 rounds to 8 mantissa bits, ~0.4% each time);
    a network left in fp32 by mistake, or skipped, would show in the dtypes or the loss. Resuming
    from a half-precision checkpoint (with the loss scaler's state) gives the same weights as going straight."""
    # Small enough to cost seconds on a CPU, where half precision is slow (fp16 ~25x, bf16 without native
    # support ~60x): 32 px (4 x 4 latents), batch 1, two steps straight (their logged losses compared
    # with fp32) vs one step, then one resumed.
    half = toy_config(tmp_path / "half", init=(str(ROOT / "weights" / "toy"),), precision=precision,
                      frozen_dtype=precision, resolution=32, batch_size=1, steps=2, checkpoint_every=1)
    full = replace(half, out_dir=str(tmp_path / "full"), precision="fp32", frozen_dtype="fp32")
    straight, reference = Trainer(half, distributed.single_process()), Trainer(full, distributed.single_process())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    for name in ("unet", "vae", "text_encoder"):
        assert {p.dtype for p in straight.networks.components()[name].parameters()} == {dtype}, name
    assert straight.scaler.is_enabled() == (precision == "fp16")
    before = snapshot(straight)
    fit(straight)  # log_every=1: log.jsonl holds each step's loss
    logged = [json.loads(line)["loss"] for line in (Path(half.out_dir) / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx(take_steps(reference, 2), rel=2e-2)
    after = snapshot(straight)
    assert all(torch.equal(before["unet"][key], after["unet"][key]) for key in before["unet"])
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in straight.networks.controlnet.parameters())
    assert any(not torch.equal(before["controlnet"][key], after["controlnet"][key]) for key in before["controlnet"])

    stopped = Trainer(replace(half, out_dir=str(tmp_path / "resumed"), steps=1), distributed.single_process())
    fit(stopped)
    resumed = Trainer(replace(half, out_dir=str(tmp_path / "resumed"), resume=True), distributed.single_process())
    fit(resumed)
    for key, value in straight.networks.controlnet.state_dict().items():
        assert torch.equal(resumed.networks.controlnet.state_dict()[key], value), key
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()  # the loss scale went on from the checkpoint


def write_validation_pair(folder: Path, size=(80, 60)) -> tuple[Path, Path]:
    """A photo-sized image (not square, not the training size) with a red box, and its mask."""
    image, mask = Image.new("RGB", size, (20, 160, 40)), Image.new("L", size, 0)
    box = (30, 20, 50, 40)
    image.paste((230, 20, 20), box)
    mask.paste(255, box)
    image.save(folder / "bottle.png")
    mask.save(folder / "bottle_mask.png")
    return folder / "bottle.png", folder / "bottle_mask.png"


def test_validation_on_the_users_own_images_and_tensorboard_beside_the_log(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    image, mask = write_validation_pair(tmp_path)
    config = toy_config(tmp_path, steps=2, checkpoint_every=2, validate_every=2, validation_image=(str(image),),
                        validation_mask=(str(mask),), validation_prompt=("a red box on grass",), log_to="tensorboard")
    fit(Trainer(config, distributed.single_process()))
    grid = load_image(Path(config.out_dir) / "validation" / "step_0000002.png")
    assert grid.shape == (3, 2 + 3 * (64 + 2), 2 + 64 + 2)  # one column: image, mask, sample
    expected, _ = centre_square(load_image(image), load_mask(mask), 64)
    torch.testing.assert_close(grid[:, 2:66, 2:66], expected, rtol=0, atol=2 / 255)  # PNG rounding
    events = EventAccumulator(str(Path(config.out_dir) / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2]
    assert [event.step for event in events.Images("validation")] == [2]


@pytest.mark.parametrize("change,message", [
    ({"validation_mask": ()}, "give one --validation-mask .* per --validation-image; got 1 image"),
    ({"validate_every": 0}, "--validation-image is drawn every --validate-every N steps"),
    ({"validation_image": ("nowhere.png",)}, "the image nowhere.png does not exist"),
    ({"validation_mask": ("{small}",)}, r"--validation-mask .*small.png is 8x8 \(width x height\) but its --validation-image"),
])
def test_validation_images_are_checked_before_step_0(tmp_path, capsys, change, message):
    image, mask = write_validation_pair(tmp_path)
    Image.new("L", (8, 8)).save(tmp_path / "small.png")
    flags = {"validation_image": (str(image),), "validation_mask": (str(mask),), "validate_every": 1, **change}
    argv = ["--data", "toy:4", "--steps", "1", "--out-dir", str(tmp_path / "run")]
    for name, value in flags.items():
        values = value if isinstance(value, tuple) else (value,)
        if values:
            argv += [f"--{name.replace('_', '-')}", *[str(v).format(small=tmp_path / "small.png") for v in values]]
    assert train_cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and re.search(message, error), error
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_tensorboard_logging_without_the_package_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    argv = ["--data", "toy:4", "--steps", "1", "--log-to", "tensorboard", "--out-dir", str(tmp_path / "run")]
    assert train_cli.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("error: --log-to tensorboard needs the tensorboard package: pip install "
                     "'salient-outpaint[tensorboard]' (or pip install tensorboard)")


def test_the_caption_embedding_cache_is_bounded_and_does_not_change_embeddings(tmp_path):
    """A frozen text encoder's embeddings are kept for the first `captions_kept` captions only (a real
    dataset has millions, 0.3 MB each at SD2 size); the others are encoded at each use, to the same values."""
    trainer = Trainer(toy_config(tmp_path), distributed.single_process(), captions_kept=2)
    objective = trainer.training_objective
    captions = [f"a red square on {colour} grass" for colour in ("green", "blue", "grey", "pink", "black")]
    first = objective.encode_text(captions)
    again = objective.encode_text(list(reversed(captions)))
    assert len(objective.text_cache) == 2
    torch.testing.assert_close(again, first.flip(0), rtol=0, atol=0)
    with torch.no_grad():
        alone = objective.networks["text_encoder"](objective.tokenizer([captions[-1]]))[0]
    torch.testing.assert_close(first[-1], alone, rtol=0, atol=0)
