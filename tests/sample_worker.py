"""Run by test_sample_torchrun.py, alone or under a launcher: sample.py or evaluate.py with their flags,
each process logging every image it writes to LOG/written-<RANK>.txt. With KILL_RANK=r, process r kills
itself (SIGKILL, no clean-up) right after its first image is written.

    python tests/sample_worker.py LOG sample|evaluate [flags]
"""
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import evaluate as evaluate_cli  # noqa: E402
import sample as sample_cli  # noqa: E402
from salient_outpaint.data import images  # noqa: E402

log, tool, flags = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
rank = os.environ.get("RANK", "0")
write_whole = images.atomic_write


def logged_write(path, write):
    written = write_whole(path, write)
    with open(log / f"written-{rank}.txt", "a") as record:
        record.write(f"{Path(path).resolve()}\n")
    if os.environ.get("KILL_RANK") == rank:
        os.kill(os.getpid(), signal.SIGKILL)
    return written


images.atomic_write = logged_write
log.mkdir(parents=True, exist_ok=True)
sys.exit({"sample": sample_cli, "evaluate": evaluate_cli}[tool].main(flags))
