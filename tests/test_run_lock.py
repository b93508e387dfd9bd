"""One run per output folder (training/run_folder.py)."""
import json
import socket
import subprocess
import sys

import pytest

import train as train_cli
from salient_outpaint.training.run_folder import LOCK_NAME, run_lock

COMMON = ["--batch-size", "2", "--steps", "1", "--log-every", "1"]
FLAGS = ["--data", "toy:4", *COMMON]


def dead_pid() -> int:
    """The PID of a process that has ended (the kernel does not reuse it at once)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_a_second_run_in_the_same_folder_is_refused_naming_the_first(tmp_path, capsys):
    out_dir = tmp_path / "run"
    with run_lock(out_dir, print):
        code = train_cli.main([*FLAGS, "--out-dir", str(out_dir)])
        owner = json.loads((out_dir / LOCK_NAME).read_text())
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1, error
    assert error.startswith(f"error: {out_dir} is in use by another training run "
                            f"(pid {owner['pid']} on {socket.gethostname()}, since {owner['since']})")
    assert not (out_dir / "log.jsonl").exists()
    assert not (out_dir / LOCK_NAME).exists()  # released when the block ended


def test_a_stale_lock_is_taken_over_with_a_note_and_released_at_the_end(tmp_path, capsys):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    gone = dead_pid()
    (out_dir / LOCK_NAME).write_text(json.dumps({"pid": gone, "host": socket.gethostname(),
                                                 "since": "2026-01-01 00:00:00", "job": ""}))
    assert train_cli.main([*FLAGS, "--out-dir", str(out_dir)]) == 0
    assert f"note: taking over {out_dir / LOCK_NAME} from a run that is gone (pid {gone} on " in capsys.readouterr().err
    assert (out_dir / "log.jsonl").is_file() and not (out_dir / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_refused_unless_it_is_an_earlier_start_of_this_slurm_job(tmp_path,
                                                                                                 monkeypatch):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "another-node",
                                                 "since": "2026-01-01 00:00:00", "job": "81734"}))
    monkeypatch.setenv("SLURM_JOB_ID", "90000")
    with pytest.raises(ValueError, match=r"in use by another training run \(pid 4242 on another-node"):
        with run_lock(out_dir, print):
            pass
    monkeypatch.setenv("SLURM_JOB_ID", "81734")  # requeued: the same job, started again on this node
    notes = []
    with run_lock(out_dir, notes.append):
        assert json.loads((out_dir / LOCK_NAME).read_text())["host"] == socket.gethostname()
    assert notes == [f"note: taking over {out_dir / LOCK_NAME} from a run that is gone "
                     "(pid 4242 on another-node, since 2026-01-01 00:00:00)"]
