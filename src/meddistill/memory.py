"""Process memory readings for stage and benchmark measurements (Linux /proc, else getrusage).

The kernel's peak-RSS mark (VmHWM) can be reset to the current RSS by writing 5 to
/proc/self/clear_refs, which makes "peak above the start of this stage" exact; where that is
not allowed, callers fall back to ru_maxrss, a process-lifetime peak.
"""

from __future__ import annotations


def proc_status_kb(field: str) -> int | None:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM, VmSize ...), None when unreadable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS; True when VmHWM/VmRSS can then be read."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return proc_status_kb("VmHWM") is not None and proc_status_kb("VmRSS") is not None


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED = {  # bytes; the environment's MALLOC_*_ variables, when set, win
    _M_MMAP_THRESHOLD: 256 << 20,
    _M_TRIM_THRESHOLD: 1 << 30,
    _M_TOP_PAD: 64 << 20,
}
_ENV = {_M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", _M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_",
        _M_TOP_PAD: "MALLOC_TOP_PAD_"}  # fmt: skip


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks of up to 256 MiB for reuse instead of returning them to the
    kernel at once. Training frees and re-allocates batch-sized tensors every step; with
    glibc's defaults each one is a fresh mmap, so every step page-faults its memory in again
    (an expert epoch on BloodMNIST: 1.6 M minor faults and 18 % of its CPU time in the
    kernel; with this 0.19 M and 4 %, for about 120 MB more peak RSS). True when applied;
    False off glibc (nothing changes there)."""
    import ctypes
    import ctypes.util
    import os

    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    done = True
    for param, value in KEEP_FREED.items():
        if os.environ.get(_ENV[param]) is None:
            done = bool(mallopt(ctypes.c_int(param), ctypes.c_int(value))) and done
    return done
