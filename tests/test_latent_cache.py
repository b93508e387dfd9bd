"""Precomputed latents (training/latent_cache.py): the same training, without the frozen encoders."""
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train as train_cli
from salient_outpaint import distributed
from salient_outpaint.training import latent_cache
from salient_outpaint.training.loop import Trainer
from tests.conftest import take_steps, toy_config


def make_cache(config, directory, epochs, shard_size=3) -> dict:
    return Trainer(config, distributed.single_process()).precompute_latents(directory, epochs, shard_size=shard_size)


def test_training_from_the_cache_gives_the_live_losses_without_running_the_encoders(tmp_path):
    """6 steps of batch 2 over 8 items read 1.5 epochs, so the cache's second epoch is used. Losses agree
    to 1e-5 relative: the cache's encoder ran on batches of another size, a few ulps apart (we measured
    2e-7). Weights agree to 1e-4, a tenth of one AdamW step at lr 1e-3. Reading the wrong cached epoch
    (another crop of the same scenes) moves the loss by 3e-3, so both tolerances would catch it."""
    config = toy_config(tmp_path, data=("toy:8",), steps=6)
    directory = tmp_path / "latents"
    summary = make_cache(config, directory, epochs=2)
    assert summary["shards"] == 6 and summary["shards_written_here"] == 6

    live = Trainer(config, distributed.single_process())
    cached = Trainer(replace(config, latents=str(directory)), distributed.single_process())

    def refuse(*args, **kwargs):
        raise AssertionError("a frozen encoder ran although its outputs are cached")

    cached.networks.text_encoder.forward = refuse
    cached.networks.vae.encode = refuse
    for step, (loss, live_loss) in enumerate(zip(take_steps(cached, config.steps), take_steps(live, config.steps))):
        assert loss == pytest.approx(live_loss, rel=1e-5), f"step {step}"
    for name, value in live.networks.controlnet.state_dict().items():
        torch.testing.assert_close(cached.networks.controlnet.state_dict()[name], value, rtol=0, atol=1e-4)


def test_a_cache_made_for_another_setup_is_refused_naming_the_differences(tmp_path):
    config = toy_config(tmp_path, data=("toy:8",))
    directory = tmp_path / "latents"
    make_cache(config, directory, epochs=1)
    with pytest.raises(ValueError, match=r"another setup.*resolution: cached 64, now 32"):
        Trainer(replace(config, resolution=32, latents=str(directory)), distributed.single_process())
    # Other frozen weights (another --init): the same run with one VAE weight changed.
    trainer = Trainer(config, distributed.single_process())
    with torch.no_grad():
        trainer.networks.vae.encoder.conv_in.weight[0, 0, 0, 0] += 1e-3
    with pytest.raises(ValueError, match=r"another setup \(encoders: cached"):
        trainer.open_latents(directory)
    with pytest.raises(ValueError, match="already holds latents made otherwise.*epochs: cached 1, now 2"):
        make_cache(config, directory, epochs=2)


def test_an_interrupted_precomputation_is_refused_then_finished_by_running_it_again(tmp_path, monkeypatch):
    config = toy_config(tmp_path, data=("toy:8",))
    directory = tmp_path / "latents"
    real_write_shard = latent_cache.write_shard
    written = []

    def crash_on_the_third_shard(path, *args):
        if len(written) == 2:
            raise KeyboardInterrupt("simulated crash")
        real_write_shard(path, *args)
        written.append(path)

    monkeypatch.setattr(latent_cache, "write_shard", crash_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        make_cache(config, directory, epochs=2)
    assert not list(directory.rglob("*.tmp")), "a crash left a half-written file"
    with pytest.raises(FileNotFoundError, match=r"incomplete: 5 file\(s\) missing.*--precompute-latents"):
        Trainer(replace(config, latents=str(directory)), distributed.single_process())

    monkeypatch.setattr(latent_cache, "write_shard", real_write_shard)
    first_files = {path: path.stat().st_mtime_ns for path in written}
    killed_write = directory / "epoch_0001" / "shard_000000.safetensorsx1y2.tmp"  # what kill -9 leaves
    killed_write.parent.mkdir(exist_ok=True)
    killed_write.write_bytes(b"half a shard")
    summary = make_cache(config, directory, epochs=2)
    assert not killed_write.exists()
    assert summary["shards_written_here"] == 4  # of 6: the two finished before the crash are kept
    assert {path: path.stat().st_mtime_ns for path in written} == first_files
    take_steps(Trainer(replace(config, latents=str(directory)), distributed.single_process()), 1)


def test_cli_precomputes_and_explains_misuse_in_one_line(tmp_path, capsys):
    common = ["--data", "toy:4", "--batch-size", "2", "--out-dir", str(tmp_path / "run")]
    assert train_cli.main([*common, "--precompute-latents", "1"]) == 2
    assert "needs --latents FOLDER" in capsys.readouterr().err

    assert train_cli.main([*common, "--latents", str(tmp_path / "nowhere"), "--steps", "1"]) == 2
    assert "no precomputed latents in" in capsys.readouterr().err

    assert train_cli.main([*common, "--stage", "unet", "--latents", str(tmp_path / "latents")]) == 2
    assert "controlnet stage only" in capsys.readouterr().err

    assert train_cli.main([*common, "--latents", str(tmp_path / "latents"), "--precompute-latents", "1"]) == 0
    assert '"items": 4' in capsys.readouterr().out
    assert Path(tmp_path / "latents" / "text.safetensors").is_file()
    assert train_cli.main([*common, "--latents", str(tmp_path / "latents"), "--steps", "2"]) == 0


@pytest.mark.slow
def test_torchrun_shares_the_precomputation_and_writes_what_one_process_writes(tmp_path):
    """Two gloo processes each write half the shards; every tensor equals the single-process cache's
    (both with one thread each, so the convolutions round alike)."""
    root = Path(__file__).resolve().parents[1]
    common = ["--data", "toy:8", "--batch-size", "2", "--seed", "3", "--precompute-latents", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29547",
                          "train.py", *common, "--latents", str(tmp_path / "two")],
                         cwd=root, env=env, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count('"shards": 2') == 1  # only the main process prints the summary
    assert '"shards_written_here": 1' in two.stdout  # the other shard was the other process's
    one = subprocess.run([sys.executable, "train.py", *common, "--latents", str(tmp_path / "one")],
                         cwd=root, env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    files = sorted(path.relative_to(tmp_path / "one") for path in (tmp_path / "one").rglob("*.safetensors"))
    assert len(files) == 3  # two epochs of one shard, and the text embeddings
    for name in files:
        single, shared = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert single.keys() == shared.keys()
        for key in single:
            assert torch.equal(single[key], shared[key]), f"{name}: {key}"
