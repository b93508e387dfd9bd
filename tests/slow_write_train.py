"""train.py with every atomic write held open for 0.3 s between writing its temporary file and
renaming it, so that test_resume.py can kill -9 it in the middle of writing a checkpoint.

    python tests/slow_write_train.py [train.py flags]
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from salient_outpaint import files  # noqa: E402

real_fsync = files.fsync


def slow_fsync(path):
    if str(path).endswith(files.TEMPORARY_SUFFIX):
        time.sleep(0.3)
    real_fsync(path)


files.fsync = slow_fsync
import train  # noqa: E402

sys.exit(train.main())
