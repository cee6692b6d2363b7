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
