"""Resuming a run: weights-only checkpoints, the config compared with the command line, kept
checkpoints and their fallback, leftovers of killed writes, log.jsonl cut back, kill -9 in a loop."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train as train_cli
from salient_outpaint import distributed
from salient_outpaint.training.loop import Trainer
from salient_outpaint.training.run_folder import cut_log, resume_state
from salient_outpaint.training.state import checkpoints_in, load_training_state
from tests.conftest import fit, toy_config

ROOT = Path(__file__).resolve().parents[1]
# the TOY run every test here resumes: 4 steps of batch 2 on 8 scenes
FLAGS = ["--data", "toy:8", "--batch-size", "2", "--learning-rate", "1e-3", "--seed", "3", "--log-every", "1"]


class Planted:
    """Unpickling this creates a file: what a malicious checkpoint could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run stopped after 2 steps, with checkpoints at steps 1 and 2."""
    out_dir = tmp_path_factory.mktemp("finished") / "run"
    assert train_cli.main([*FLAGS, "--steps", "2", "--checkpoint-every", "1", "--out-dir", str(out_dir)]) == 0
    return out_dir


def test_checkpoints_hold_only_tensors_and_plain_data(finished_run):
    state = torch.load(checkpoints_in(finished_run)[0], weights_only=True)
    assert state["step"] == 2 and json.loads(state["config"])["learning_rate"] == 1e-3
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    assert [path.name for path in checkpoints_in(finished_run)] == ["checkpoint_0000002.pt", "checkpoint_0000001.pt"]


def test_a_planted_malicious_checkpoint_does_not_run_and_the_error_says_why(tmp_path, capsys):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    marker = tmp_path / "created_by_the_checkpoint"
    torch.save({"step": 5, "config": Planted(marker)}, out_dir / "checkpoint_0000005.pt")
    code = train_cli.main([*FLAGS, "--steps", "6", "--out-dir", str(out_dir), "--resume"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and not marker.exists()
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"error: refusing to load {out_dir / 'checkpoint_0000005.pt'}: it holds Python objects")
    assert "could run any code" in error and "open" in error  # names what it wanted to call


@pytest.mark.parametrize("changed,old,new", [
    (["--learning-rate", "5e-4"], "--learning-rate 0.001", "(now 0.0005)"),
    (["--batch-size", "4"], "--batch-size 2", "(now 4)"),
    (["--data", "toy:16"], "--data toy:8", "(now toy:16)"),
    (["--stage", "unet"], "--stage controlnet", "(now unet)"),
])
def test_resuming_with_other_settings_is_one_error_naming_each_field(finished_run, capsys, changed, old, new):
    flags = dict(zip(FLAGS[::2], FLAGS[1::2]))
    flags.update(dict(zip(changed[::2], changed[1::2])))
    argv = [item for pair in flags.items() for item in pair]
    code = train_cli.main([*argv, "--steps", "4", "--out-dir", str(finished_run), "--resume"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert f"cannot resume {finished_run} (step 2) with other settings: {old} {new}." in error
    assert "Pass the old values" in error and "another --out-dir" in error and "--steps" in error


def test_resuming_with_several_differences_lists_them_all(finished_run):
    config, _ = train_cli.parse_args([*FLAGS, "--out-dir", str(finished_run), "--resume", "--seed", "4",
                                      "--resolution", "32"])
    with pytest.raises(ValueError, match=r"--resolution 64 \(now 32\); --seed 3 \(now 4\)\."):
        resume_state(config, distributed.single_process())


def test_the_steps_and_other_harmless_settings_may_change_on_resume(finished_run):
    config, _ = train_cli.parse_args([*FLAGS, "--out-dir", str(finished_run), "--resume", "--steps", "10",
                                      "--log-every", "5", "--checkpoint-every", "3", "--keep-checkpoints", "4",
                                      "--num-workers", "2", "--gradient-checkpointing"])
    assert resume_state(config, distributed.single_process())["step"] == 2


def test_a_new_run_in_a_folder_with_checkpoints_is_refused(finished_run, capsys):
    assert train_cli.main([*FLAGS, "--steps", "4", "--out-dir", str(finished_run)]) == 2
    error = capsys.readouterr().err.strip()
    assert "holds checkpoints of an earlier run (newest: checkpoint_0000002.pt); pass --resume" in error


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_and_the_log_is_cut(tmp_path, capsys):
    """Kept checkpoints: only the newest 2 stay. The newest cut in half (a disk filling up) is passed
    over with a note; the run goes on from the one before, its log never repeats a step, and a
    killed write's leftover is removed."""
    config = toy_config(tmp_path, data=("toy:8",), steps=4, checkpoint_every=1, keep_checkpoints=2)
    fit(Trainer(config, distributed.single_process()))
    out_dir = Path(config.out_dir)
    assert [path.name for path in checkpoints_in(out_dir)] == ["checkpoint_0000004.pt", "checkpoint_0000003.pt"]
    newest = checkpoints_in(out_dir)[0]
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])
    leftover = out_dir / "checkpoint_0000005.ptk2j3x.tmp"
    leftover.write_bytes(b"half a checkpoint")
    (out_dir / "weights" / "controlnet" / "config.jsonabc.tmp").write_text("{")
    capsys.readouterr()

    resumed = Trainer(replace(config, resume=True), distributed.single_process())
    real_step = resumed.step
    steps_run = []
    resumed.step = lambda step, batches: steps_run.append(step) or real_step(step, batches)
    fit(resumed)
    notes = capsys.readouterr().err
    assert steps_run == [3]
    assert "note: skipped a damaged checkpoint, resuming from checkpoint_0000003.pt instead: " \
           f"{newest} is damaged" in notes
    assert f"note: removed {leftover}" in notes and "config.jsonabc.tmp" in notes
    assert not list(out_dir.rglob("*.tmp"))
    steps = [json.loads(line)["step"] for line in (out_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert load_training_state(out_dir)["step"] == 4


def test_when_no_checkpoint_is_readable_the_error_says_so(tmp_path, capsys):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "checkpoint_0000002.pt").write_bytes(b"")
    (out_dir / "checkpoint_0000001.pt").write_bytes(b"PK\x03\x04 cut")
    assert train_cli.main([*FLAGS, "--steps", "4", "--out-dir", str(out_dir), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "none of the 2 checkpoint(s) in" in error and "is readable" in error


def controlnet_weights(out_dir: Path) -> dict:
    return load_file(str(out_dir / "weights" / "controlnet" / "diffusion_pytorch_model.safetensors"))


def wait_for(condition, process):
    while not condition():
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_in_a_loop_then_resume_reaches_the_uninterrupted_weights_bit_exactly(tmp_path):
    """kill -9 mid-write (while a training checkpoint's temporary file is open: tests/slow_write_train.py
    holds every atomic write open for 0.3 s), after a given step, and at a random moment, then resume
    each time. The final weights equal an uninterrupted run's exactly: the data, noise and every
    other draw are functions of (seed, step) and the checkpoint restores the optimizer and RNGs."""
    flags = [*FLAGS, "--steps", "6", "--checkpoint-every", "1", "--keep-checkpoints", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "train.py", *flags, "--out-dir", str(straight)], cwd=ROOT, env=env, check=True,
                   capture_output=True)

    out_dir = tmp_path / "killed"
    log = out_dir / "log.jsonl"

    def logged_steps():
        return len(log.read_text().splitlines()) if log.is_file() else 0

    def checkpoint_being_written():
        return out_dir.is_dir() and any(path.name.startswith("checkpoint_") for path in out_dir.glob("*.tmp"))

    chooser = random.Random(0)
    kills = [("mid-write", checkpoint_being_written),
             ("after a step", lambda: logged_steps() >= 3),
             ("mid-write", checkpoint_being_written),
             ("at random", lambda: logged_steps() >= 4 and chooser.random() < 0.02)]
    for what, moment in kills:
        run = subprocess.Popen([sys.executable, "tests/slow_write_train.py", *flags, "--out-dir", str(out_dir),
                                "--resume"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(moment, run)
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert run.returncode == -signal.SIGKILL, what
    finish = subprocess.run([sys.executable, "train.py", *flags, "--out-dir", str(out_dir), "--resume"], cwd=ROOT,
                            env=env, capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr[-3000:]
    assert "taking over" in finish.stderr  # the last killed run's lock
    assert not list(out_dir.rglob("*.tmp"))
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    ours, reference = controlnet_weights(out_dir), controlnet_weights(straight)
    for key in reference:
        assert torch.equal(ours[key], reference[key]), key


def test_the_log_is_cut_back_to_the_resumed_step_even_after_a_half_written_line(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": step, "loss": 1.0}) + "\n" for step in range(1, 6)) + '{"step": 6, "lo')
    cut_log(log, 3)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
