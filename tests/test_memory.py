"""keep_freed_memory: glibc keeps freed blocks for reuse (no page-fault storm per step)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from meddistill.memory import keep_freed_memory

PROBE = """
import ctypes, mmap, resource, sys
from meddistill.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    x = torch.ones(8 << 20)  # 32 MiB, freed at once: the per-step pattern of training
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library found")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt is Linux-only")
    plain, kept = faults("plain"), faults("keep")
    # 50 x 32 MiB fresh maps fault in ~400k pages; reused blocks fault in only the first one
    assert plain > 100_000 and kept < plain / 10, (plain, kept)


def test_it_says_whether_it_applied():
    assert isinstance(keep_freed_memory(), bool)
