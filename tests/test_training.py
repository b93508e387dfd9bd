"""The training loop on the TOY configuration: learning, freezing, resume, DDP, errors."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train as train_cli
from salient_outpaint.training import distributed
from salient_outpaint.training.config import TrainConfig
from salient_outpaint.training.loop import Trainer, run
from salient_outpaint.training.state import load_training_state
from tests.test_models import toy_unet_with_and_without_controlnet

ROOT = Path(__file__).resolve().parents[1]


def toy_config(tmp_path, **overrides) -> TrainConfig:
    base = TrainConfig(stage="controlnet", preset="toy", data=("toy:32",), out_dir=str(tmp_path / "run"),
                       resolution=64, steps=4, batch_size=2, learning_rate=1e-3, log_every=1, checkpoint_every=2,
                       seed=3)
    return replace(base, **overrides)


def snapshot(trainer: Trainer) -> dict:
    return {name: {k: v.clone() for k, v in module.state_dict().items()}
            for name, module in trainer.models.components().items()}


def test_only_the_controlnet_changes_and_it_starts_as_the_frozen_unet(tmp_path):
    trainer = Trainer(toy_config(tmp_path), distributed.single_process())
    models = trainer.models
    before = snapshot(trainer)

    # Step 0: the zero convolutions make the controlled U-Net equal to the U-Net alone.
    controlled, plain = toy_unet_with_and_without_controlnet(models, torch.tensor([7, 700]))
    assert torch.equal(controlled, plain)

    for step in range(3):
        trainer.step(step)
    after = snapshot(trainer)
    for name in ("unet", "vae", "text_encoder"):
        for key in before[name]:
            assert torch.equal(before[name][key], after[name][key]), f"frozen {name}.{key} changed"
    changed = [key for key in before["controlnet"] if not torch.equal(before["controlnet"][key],
                                                                      after["controlnet"][key])]
    assert any(key.startswith("controlnet_down_blocks") for key in changed)
    assert any(key.startswith("down_blocks") for key in changed)


@pytest.mark.slow
def test_loss_falls_on_a_tiny_synthetic_set(tmp_path):
    """The inpainting U-Net stage learns fast enough to show in a few dozen steps."""
    config = toy_config(tmp_path, stage="unet", data=("toy:16",), steps=60, batch_size=8, learning_rate=2e-3,
                        checkpoint_every=1000, log_every=10)
    run(Trainer(config, distributed.single_process()))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert losses[-1] < 0.6 * losses[0], losses


def test_kill_and_resume_gives_identical_parameters(tmp_path):
    straight = toy_config(tmp_path / "straight")
    run(Trainer(straight, distributed.single_process()))

    crashed = toy_config(tmp_path / "crashed")
    trainer = Trainer(crashed, distributed.single_process())
    real_step = trainer.step

    def step_then_crash(step):
        if step == 3:  # after the checkpoint at step 2, in the middle of the run
            raise KeyboardInterrupt("simulated crash")
        return real_step(step)

    trainer.step = step_then_crash
    with pytest.raises(KeyboardInterrupt):
        run(trainer)
    assert load_training_state(crashed.out_dir)["step"] == 2
    assert not [p for p in Path(crashed.out_dir).iterdir() if p.name.endswith(".tmp")], "half-written file left"

    run(Trainer(replace(crashed, resume=True), distributed.single_process()))
    ours = load_file(str(Path(crashed.out_dir) / "weights/controlnet/diffusion_pytorch_model.safetensors"))
    reference = load_file(str(Path(straight.out_dir) / "weights/controlnet/diffusion_pytorch_model.safetensors"))
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    config = toy_config(tmp_path, steps=4, checkpoint_every=2)
    trainer = Trainer(config, distributed.single_process())
    real_forward = trainer.model.forward
    calls = []

    def forward_going_nan(*args):
        calls.append(1)
        loss = real_forward(*args)
        return loss * float("nan") if len(calls) == 4 else loss  # the 4th call is step 3

    trainer.model.forward = forward_going_nan
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 3.*--resume"):
        run(trainer)
    assert load_training_state(config.out_dir)["step"] == 2


def test_cli_reports_a_wrong_init_checkpoint_in_one_line(tmp_path, capsys):
    code = train_cli.main(["--init", str(tmp_path / "missing.safetensors"), "--out-dir", str(tmp_path / "r"),
                           "--data", "toy:4", "--steps", "1"])
    assert code == 2
    assert capsys.readouterr().err.strip().startswith("error: checkpoint file not found")


def test_benchmark_prints_throughput_and_memory(tmp_path, capsys):
    assert train_cli.main(["--preset", "toy", "--data", "toy:8", "--batch-size", "2", "--benchmark", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples_per_s"] > 0 and result["peak_memory_mb"] > 0


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process_with_the_same_global_batch(tmp_path):
    """gloo on CPU. Both ranks must hold identical weights (DDP), and those must equal a single process
    with batch 4 up to float32 reduction order: the gradient is averaged over ranks instead of over
    the batch, a few ulps apart. AdamW divides by the gradient's running RMS, so where a gradient is
    near zero those ulps can move a weight by a visible fraction of lr; we measured at most 1.8e-5 after
    3 steps at lr 1e-3, and allow 1e-4 (a tenth of one step): a different batch moves weights by ~lr."""
    common = ["--preset", "toy", "--data", "toy:32", "--steps", "3", "--learning-rate", "1e-3", "--seed", "3",
              "--checkpoint-every", "3", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                          str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "two"), *common, "--batch-size", "2"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "one"), *common,
                          "--batch-size", "4"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    rank0 = torch.load(tmp_path / "two" / "rank0.pt")
    rank1 = torch.load(tmp_path / "two" / "rank1.pt")
    single = torch.load(tmp_path / "one" / "rank0.pt")
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        torch.testing.assert_close(rank0[key], single[key], rtol=0, atol=1e-4)


@pytest.mark.parametrize("stage", ["vae", "controlnet"])
def test_validation_grids_are_written_and_training_mode_is_restored(tmp_path, stage):
    config = toy_config(tmp_path, stage=stage, steps=2, validate_every=2, checkpoint_every=2)
    trainer = Trainer(config, distributed.single_process())
    run(trainer)
    grid = Path(config.out_dir) / "validation" / "step_0000002.png"
    assert grid.is_file()
    trained = {"vae": "vae", "controlnet": "controlnet"}[stage]
    assert trainer.models.components()[trained].training
    assert all(p.requires_grad for p in trainer.models.components()[trained].parameters())
    assert not trainer.models.unet.training and not any(p.requires_grad for p in trainer.models.unet.parameters())


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
        assert {p.dtype for p in straight.models.components()[name].parameters()} == {dtype}, name
    assert straight.scaler.is_enabled() == (precision == "fp16")
    before = snapshot(straight)
    run(straight)  # log_every=1: log.jsonl holds each step's loss
    logged = [json.loads(line)["loss"] for line in (Path(half.out_dir) / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([reference.step(step) for step in range(2)], rel=2e-2)
    after = snapshot(straight)
    assert all(torch.equal(before["unet"][key], after["unet"][key]) for key in before["unet"])
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in straight.models.controlnet.parameters())
    assert any(not torch.equal(before["controlnet"][key], after["controlnet"][key]) for key in before["controlnet"])

    stopped = Trainer(replace(half, out_dir=str(tmp_path / "resumed"), steps=1), distributed.single_process())
    run(stopped)
    if precision == "fp16":
        assert load_training_state(stopped.config.out_dir)["scaler"]["scale"] > 0
    resumed = Trainer(replace(half, out_dir=str(tmp_path / "resumed"), resume=True), distributed.single_process())
    run(resumed)
    for key, value in straight.models.controlnet.state_dict().items():
        assert torch.equal(resumed.models.controlnet.state_dict()[key], value), key
