"""heap.trim hands the C heap's free pages back to the system (glibc's malloc_trim)."""
import subprocess
import sys
from pathlib import Path

import pytest

from salient_outpaint import heap

PROBE = """
import torch
from salient_outpaint import heap

def resident_anonymous_mib():
    with open('/proc/self/status') as status:
        return next(int(line.split()[1]) for line in status if line.startswith('RssAnon')) // 1024

before = resident_anonymous_mib()
blocks = [torch.ones(16384) for _ in range(4000)]  # 64 KiB each, 250 MiB: small enough for the heap
kept = blocks[::16]  # one block in 16 stays alive, so the freed space is scattered and the heap cannot shrink
del blocks
freed = resident_anonymous_mib()
heap.trim()
print(before, freed, resident_anonymous_mib())
"""


@pytest.mark.skipif(heap.c_library() is None or not Path("/proc/self/status").exists(),
                    reason="needs glibc's malloc_trim and /proc (Linux)")
def test_trim_returns_the_scattered_free_space_of_the_heap():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    before, freed, trimmed = map(int, result.stdout.split())
    assert freed - before > 150  # freeing 15 blocks in 16 gave nothing back by itself
    assert freed - trimmed > 150  # trim did
