"""Many processes, one batch: torchrun sample.py and evaluate.py --generate deal the inputs out, write
each output once, make the images one process makes, print one summary, and end by themselves when a
peer dies; a rerun with any number of processes makes only what is missing.

The multi-process runs are 2 gloo processes of one thread each (as torchrun runs them) on 6 toy inputs,
through tests/sample_worker.py, which logs every image each process writes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample as sample_cli
from salient_outpaint import batch
from salient_outpaint.data.manifest import read_manifest
from salient_outpaint.distributed import process_device
from salient_outpaint.evaluation import run
from tests.conftest import SINGLE_THREADED, free_port, salient_folder

ROOT = Path(__file__).resolve().parents[1]
WORKER = [str(ROOT / "tests" / "sample_worker.py")]
INPUTS = 6
FLAGS = ["--steps", "2", "--num-images", "2", "--prompt", "a red star"]


def outputs(count=INPUTS, images=2) -> list[str]:
    return sorted(f"img{index}_{suffix}.png" for index in range(count)
                  for suffix in [*map(str, range(images)), "grid"])


def written(log: Path) -> list[Path]:
    """Every image the processes logged, with repeats."""
    return [Path(line) for record in sorted(log.glob("written-*.txt")) for line in record.read_text().split()]


def torchrun(log: Path, *arguments: str, tool="sample") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", *WORKER, str(log), tool, *arguments],
                          cwd=ROOT, env=SINGLE_THREADED, capture_output=True, text=True)


def alone(log: Path, *arguments: str, tool="sample") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *WORKER, str(log), tool, *arguments], cwd=ROOT, env=SINGLE_THREADED,
                          capture_output=True, text=True)


def launched_by_hand(log: Path, *arguments: str, **extra_env) -> list[tuple[int, str, str]]:
    """2 processes started as any launcher would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) but
    with no launcher watching them: (exit code, stdout, stderr) of each."""
    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, *WORKER, str(log), "sample", *arguments], cwd=ROOT,
                                  env={**SINGLE_THREADED, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                       "MASTER_ADDR": "localhost", "MASTER_PORT": port, **extra_env},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in range(2)]
    outputs = [process.communicate() for process in processes]
    return [(process.returncode, *output) for process, output in zip(processes, outputs)]


def assert_like_one_process(out: Path, reference: Path) -> None:
    """Equal to the one-process images up to float rounding: at most 1/255 apart at no more than 0.1% of
    the pixels (one thread each, so in practice they are equal)."""
    for path in sorted(reference.glob("*.png")):
        ours = np.asarray(Image.open(out / path.name)).astype(int)
        theirs = np.asarray(Image.open(path)).astype(int)
        assert ours.shape == theirs.shape, path.name
        difference = np.abs(ours - theirs)
        assert difference.max() <= 1 and (difference > 0).mean() <= 1e-3, path.name


def summary_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("wrote ")]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return salient_folder(tmp_path_factory.mktemp("photos"), count=INPUTS)


@pytest.fixture(scope="module")
def one_process(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_process")
    result = alone(out / "log", "--image", str(photos / "images"), "--mask", str(photos / "masks"), *FLAGS,
                   "--out", str(out / "images"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "images"


def folder_flags(photos: Path, out: Path) -> list[str]:
    return ["--image", str(photos / "images"), "--mask", str(photos / "masks"), *FLAGS, "--out", str(out)]


@pytest.mark.slow
def test_two_processes_share_a_folder_with_masks_and_make_the_one_process_images(tmp_path, photos, one_process):
    result = torchrun(tmp_path / "log", *folder_flags(photos, tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    paths = written(tmp_path / "log")
    assert len(paths) == len(set(paths)) == len(outputs())  # every output once
    assert sorted(path.name for path in paths) == outputs()
    assert len(list((tmp_path / "log").glob("written-*.txt"))) == 2  # both processes took a share
    assert_like_one_process(tmp_path / "out", one_process)
    assert summary_lines(result.stdout) == [f"wrote 12 images for 6 of 6 inputs to {tmp_path / 'out'}"]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_unreadable_input_of_a_manifest_is_named_once_and_the_others_are_done(tmp_path, photos):
    lines = [json.dumps({"id": f"img{index}", "image": str(photos / "images" / f"img{index}.jpg"),
                         "mask": str(photos / "masks" / f"img{index}.png"), "prompt": "a red star"})
             for index in range(INPUTS)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    lines[3] = json.dumps({"id": "img3", "image": str(tmp_path / "broken.jpg"),
                           "mask": str(photos / "masks" / "img3.png"), "prompt": "a red star"})
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    processes = launched_by_hand(tmp_path / "log", "--inputs", str(tmp_path / "manifest.jsonl"), "--steps", "2",
                                 "--num-images", "2", "--out", str(tmp_path / "out"))
    assert [code for code, _, _ in processes] == [1, 1], processes  # each exits as one process would
    stdout = "".join(out for _, out, _ in processes)
    stderr = "".join(err for _, _, err in processes)
    assert summary_lines(stdout) == [f"wrote 10 images for 5 of 6 inputs to {tmp_path / 'out'}"]
    assert len([line for line in stderr.splitlines() if "broken.jpg" in line]) == 1
    assert len([line for line in stderr.splitlines() if line.startswith("error: 1 of 6 inputs failed")]) == 1
    assert processes[0][2].strip().splitlines()[-1] == "error: 1 of 6 inputs failed (see above): img3"  # rank 0's
    assert sorted(path.name for path in written(tmp_path / "log")) == [
        name for name in outputs() if not name.startswith("img3")]


@pytest.mark.slow
def test_a_killed_process_ends_the_run_and_the_rerun_makes_only_what_is_missing(tmp_path, photos, one_process):
    """Process 1 dies (SIGKILL) after its first image; process 0 finishes its share and ends by itself
    with one line. The rerun, under torchrun, makes the missing inputs only (the killed one's unfinished
    input whole again) and leaves every finished input's files as they were: same inode, same time."""
    out = tmp_path / "out"
    (code0, _, err0), (code1, _, _) = launched_by_hand(tmp_path / "first", *folder_flags(photos, out), KILL_RANK="1")
    assert code1 == -9 and code0 == 1
    assert len(err0.strip().splitlines()) >= 1 and "another process of the run stopped" in err0.strip().splitlines()[-1]
    first = written(tmp_path / "first")
    assert len(first) == len(set(first)) and first
    finished = sorted(out.glob("*_grid.png"))
    kept = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("*.png")
            if (out / f"{path.name.rsplit('_', 1)[0]}_grid.png") in finished}
    assert 0 < len(finished) < INPUTS

    result = torchrun(tmp_path / "rerun", *folder_flags(photos, out))
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = written(tmp_path / "rerun")
    assert len(rerun) == len(set(rerun))
    assert sorted(path.name for path in rerun) == sorted(set(outputs()) - {path.name for path in kept})
    assert {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in kept} == kept
    assert f"{len(finished)} already done, skipped" in result.stdout
    assert_like_one_process(out, one_process)


@pytest.mark.slow
def test_two_nodes_of_one_process_share_a_folder(tmp_path, photos, one_process):
    """Multi-node torchrun simulated on one machine, as the training test does: two launchers
    (--nnodes=2 --nproc_per_node=1) meet through c10d rendezvous on localhost and share --out."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
              "--rdzv_backend=c10d", f"--rdzv_endpoint=localhost:{free_port()}", "--rdzv_id=two-nodes", *WORKER,
              str(tmp_path / "log"), "sample", *folder_flags(photos, tmp_path / "out")]
    nodes = [subprocess.Popen(launch, cwd=ROOT, env=SINGLE_THREADED, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(*node.communicate(), node) for node in nodes]
    for _, stderr, node in results:
        assert node.returncode == 0, stderr[-3000:]
    paths = written(tmp_path / "log")
    assert len(paths) == len(set(paths)) and sorted(path.name for path in paths) == outputs()
    assert summary_lines("".join(stdout for stdout, _, _ in results)) == [
        f"wrote 12 images for 6 of 6 inputs to {tmp_path / 'out'}"]
    assert_like_one_process(tmp_path / "out", one_process)


@pytest.mark.slow
def test_evaluate_generate_shares_the_images_and_measures_once(tmp_path):
    """2 processes generate 5 toy scenes' images, each once; rank 0 alone measures and reports. A rerun
    by one process makes no image again (the settings record matches) and reports the same numbers."""
    flags = ["--generate", "--toy", "5", "--num-images", "1", "--steps", "2", "--methods", "controlnet",
             "--device", "cpu", "--out", str(tmp_path / "eval")]
    result = torchrun(tmp_path / "log", *flags, tool="evaluate")
    assert result.returncode == 0, result.stderr[-3000:]
    generated = [path for path in written(tmp_path / "log") if path.parent.name == "controlnet"]
    assert sorted(path.name for path in generated) == [f"{index:04d}_0.png" for index in range(5)]
    assert len(list((tmp_path / "log").glob("written-*.txt"))) == 2
    assert result.stdout.count("wrote ") == 1 and result.stdout.count("# Evaluation") == 1
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert len(report["records"]) == 5

    again = alone(tmp_path / "again", *flags, tool="evaluate")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [path for path in written(tmp_path / "again") if path.parent.name == "controlnet"]
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["summary"] == report["summary"]


def test_an_explicit_gpu_with_many_processes_is_refused_and_cuda_means_the_local_rank():
    with pytest.raises(ValueError, match="--device cuda:1 with 2 processes would put them all on one GPU"):
        process_device("cuda:1", local_rank=0, world_size=2)
    assert process_device("cpu", local_rank=1, world_size=2) == torch.device("cpu")
    assert process_device("cuda:1", local_rank=0, world_size=1) == torch.device("cuda:1")  # alone: as given
    if torch.cuda.device_count() >= 2:
        assert process_device("cuda", local_rank=1, world_size=2) == torch.device("cuda", 1)


def test_a_rerun_with_other_settings_is_refused_and_overwrite_redoes_every_input(tmp_path, monkeypatch, capsys):
    salient_folder(tmp_path, count=2)
    calls = []
    monkeypatch.setattr(batch, "outpaint_photo", lambda pipeline, image, mask, prompt, negative, count, *rest, **options:
                        calls.append(prompt) or torch.zeros(count, *image.shape))
    arguments = ["--image", str(tmp_path / "images"), "--mask", str(tmp_path / "masks"), "--steps", "1",
                 "--num-images", "1", "--prompt", "x", "--out", str(tmp_path / "out")]
    assert sample_cli.main(arguments) == 0 and len(calls) == 2
    capsys.readouterr()
    assert sample_cli.main([*arguments, "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "made with other settings (sampling differ" in err[0] and "--overwrite" in err[0]
    assert sample_cli.main([*arguments, "--seed", "5"]) == 2 and "(seed differ" in capsys.readouterr().err
    assert len(calls) == 2
    (tmp_path / "out" / "img0_0.png").unlink()
    (tmp_path / "out" / "img1_grid.png").unlink()  # nothing done: the new settings are simply recorded
    assert sample_cli.main([*arguments, "--steps", "2"]) == 0 and len(calls) == 4
    assert sample_cli.main([*arguments, "--steps", "3", "--overwrite"]) == 0 and len(calls) == 6
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["sampling"]["steps"] == 3
    assert sample_cli.main([*arguments, "--steps", "3"]) == 0 and len(calls) == 6
    (tmp_path / "out" / "settings.json").unlink()  # finished images of unknown making are not taken as done
    assert sample_cli.main([*arguments, "--steps", "3"]) == 2
    assert "holds images but no settings.json saying how they were made" in capsys.readouterr().err


def test_evaluate_regenerates_the_samples_of_a_folder_made_with_other_settings(tmp_path):
    (tmp_path / "inputs").mkdir()
    salient_folder(tmp_path / "inputs", count=2)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"img{index}", "image": f"inputs/images/img{index}.jpg",
                                            "mask": f"inputs/masks/img{index}.png", "prompt": "x"}) + "\n"
                                for index in range(2)))
    inputs = read_manifest(manifest)
    made = []

    def pipeline(image, mask, prompt, num_images, options, generator):
        made.append(prompt)
        return torch.zeros(num_images, *image.shape)

    generate = lambda settings: run.generate(pipeline, inputs, tmp_path / "gen", 1, None, seed=0,  # noqa: E731
                                             settings=settings)
    generate({"steps": 2})
    generate({"steps": 2})
    assert len(made) == 2  # the second run found every sample made alike
    generate({"steps": 3})
    assert len(made) == 4
