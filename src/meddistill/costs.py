"""What a stage cost: wall time, CPU time (user and system), peak memory and the device; and
costs.json, the record a run folder keeps of them.

Why one module: run folders (costs.json) and the benchmark database (bench/db.py) must measure
the same way, so that a table can set accuracy against cost without mixing two yardsticks.

CPU time is this process's (every thread) plus that of its child processes (worker pools,
forkserver workers included: see _live_children_cpu), so it can exceed the wall time. Peak
memory is this process's (workers' memory is not in it):

- peak_rss_mb: the resident-set peak during the stage. The kernel's peak mark (VmHWM) is reset
  at the start through /proc/self/clear_refs ('rss_hwm', exact); where that is refused it is
  getrusage's ru_maxrss ('rss_maxrss'), the process-lifetime peak, an upper bound.
- peak_gpu_mb: torch.cuda.max_memory_allocated during the stage (None off CUDA).
- peak_mem_mb: the peak ABOVE the start of the stage (mem_kind 'cuda_allocated' on CUDA, else
  the resident set as rss_kind says), what the benchmark database has always stored.

Measurements nest (the bench measures a whole distillation whose run measures its stages): an
inner one resetting the peak marks first hands the peaks so far to the enclosing ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from meddistill import distributed
from meddistill.memory import proc_status_kb, reset_peak_rss
from meddistill.utils import write_json_atomic

COSTS_FILE = "costs.json"
MB = 2**20
# ru_maxrss is in kilobytes on Linux, in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


@dataclass
class Cost:
    """The cost of one stage, filled in when `measure` exits (times in s, memory in MiB)."""

    stage: str = ""
    device: str = "cpu"
    wall_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    peak_rss_mb: float | None = None
    rss_kind: str = ""
    peak_gpu_mb: float | None = None
    peak_mem_mb: float = 0.0
    mem_kind: str = ""
    threads: int = field(default_factory=torch.get_num_threads)

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded (ms, 0.1 MiB): the noise below that means nothing."""
        out = asdict(self)
        for key, digits in _ROUNDING.items():
            if isinstance(out.get(key), float):
                out[key] = round(out[key], digits)
        return out

    def describe(self) -> str:
        """'cpu 3.1 s = 2.9 user + 0.2 sys, peak rss 512 MB, gpu 1024 MB' for log lines."""
        text = f"cpu {self.cpu_s:.1f} s = {self.cpu_user_s:.1f} user + {self.cpu_sys_s:.1f} sys"
        if self.peak_rss_mb is not None:
            text += f", peak rss {self.peak_rss_mb:.0f} MB"
        if self.peak_gpu_mb is not None:
            text += f", gpu {self.peak_gpu_mb:.0f} MB"
        return text


_ROUNDING = {"wall_s": 3, "cpu_user_s": 3, "cpu_sys_s": 3, "peak_rss_mb": 1, "peak_gpu_mb": 1,
             "peak_mem_mb": 1}  # fmt: skip


@dataclass(eq=False)
class _Probe:
    """An open measurement: its starting readings and the peaks nested ones handed it."""

    wall: float
    user: float
    sys: float
    base: int  # bytes that peak_mem_mb counts above
    rss_peak: int = 0  # bytes
    gpu_peak: int = 0


_OPEN: list[_Probe] = []


def _cpu_times() -> tuple[float, float]:
    """User and system seconds of this process and all its child processes, live or gone."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    gone = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = _live_children_cpu()
    return own.ru_utime + gone.ru_utime + user, own.ru_stime + gone.ru_stime + system


def _live_children_cpu() -> tuple[float, float]:
    """User and system seconds of the live child processes and of what they waited for
    (/proc/PID/stat utime + cutime, stime + cstime). getrusage(RUSAGE_CHILDREN) counts only
    children this process waited for: it never sees the workers of a forkserver (its
    children, not ours) nor a pool's workers before they end. A child counted here while
    alive moves into RUSAGE_CHILDREN when reaped, so the sum never counts it twice."""
    user = system = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in _child_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = [int(fields[i]) for i in (11, 12, 13, 14)]  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile: its time is in RUSAGE_CHILDREN once reaped
        user += (ticks[0] + ticks[2]) / tick
        system += (ticks[1] + ticks[3]) / tick
    return user, system


def _child_pids() -> set[int]:
    """The live child processes (/proc/self/task/*/children; none where that is missing)."""
    pids: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            listed = Path(f"/proc/self/task/{task}/children").read_text()
            pids.update(int(p) for p in listed.split())
    except (OSError, ValueError):
        return pids
    return pids


def _rss_bytes(exact: bool, field_name: str) -> int:
    """A /proc status field (VmRSS, VmHWM) when the mark can be reset, else ru_maxrss."""
    if exact:
        return (proc_status_kb(field_name) or 0) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * _MAXRSS_UNIT


def _hand_peaks_out(dev: torch.device) -> None:
    """Before the peak marks are reset, keep the peaks so far in every open measurement."""
    if not _OPEN:
        return
    rss = _rss_bytes(True, "VmHWM")
    gpu = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
    for probe in _OPEN:
        probe.rss_peak = max(probe.rss_peak, rss)
        probe.gpu_peak = max(probe.gpu_peak, gpu)


def _begin(dev: torch.device, cost: Cost) -> _Probe:
    _hand_peaks_out(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    exact = reset_peak_rss()
    cost.rss_kind = "rss_hwm" if exact else "rss_maxrss"
    if dev.type == "cuda":
        cost.mem_kind, base = "cuda_allocated", torch.cuda.memory_allocated(dev)
    else:
        cost.mem_kind, base = cost.rss_kind, _rss_bytes(exact, "VmRSS")
    user, system = _cpu_times()
    return _Probe(time.perf_counter(), user, system, base)


def _end(dev: torch.device, cost: Cost, probe: _Probe) -> None:
    gpu = 0
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        gpu = max(torch.cuda.max_memory_allocated(dev), probe.gpu_peak)
        cost.peak_gpu_mb = gpu / MB
    user, system = _cpu_times()
    cost.wall_s = time.perf_counter() - probe.wall
    cost.cpu_user_s, cost.cpu_sys_s = user - probe.user, system - probe.sys
    rss = max(_rss_bytes(cost.rss_kind == "rss_hwm", "VmHWM"), probe.rss_peak)
    cost.peak_rss_mb = rss / MB
    peak = gpu if dev.type == "cuda" else rss
    cost.peak_mem_mb = max(0, peak - probe.base) / MB


@contextlib.contextmanager
def measure(stage: str, device: torch.device | str = "cpu") -> Iterator[Cost]:
    """Measure the `with` block as stage `stage` on `device` (CUDA work is waited for)."""
    dev = torch.device(device)
    cost = Cost(stage=stage, device=str(dev))
    probe = _begin(dev, cost)
    _OPEN.append(probe)
    try:
        yield cost
    finally:
        _OPEN[:] = [p for p in _OPEN if p is not probe]
        _end(dev, cost, probe)


# ---------------------------------------------------------------------------------------------
# costs.json
# ---------------------------------------------------------------------------------------------


def device_name(device: str) -> str:
    """The device in words (the GPU's name), so a cost can be compared with another machine's."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or dev.type


def read_costs(folder: str | Path) -> dict[str, Any]:
    """folder/costs.json, or {} when absent or unreadable (a cost is never worth a failure)."""
    try:
        data = json.loads((Path(folder) / COSTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sessions(data: dict[str, Any]) -> list[dict[str, Any]]:
    sessions = data.get("sessions")
    if not isinstance(sessions, list):
        return []
    return [s for s in sessions if isinstance(s, dict) and isinstance(s.get("stage"), str)]


def record_cost(folder: str | Path, cost: Cost, **extra: Any) -> dict[str, Any]:
    """Add one session of a stage to folder/costs.json (written atomically) and refresh the
    per-stage totals. Sessions accumulate: a resumed or re-evaluated run adds to them.
    Under torchrun rank 0 writes it, its session saying how many ranks ran (the times and
    memory are rank 0's)."""
    if not distributed.is_main():
        return {}
    if distributed.world_size() > 1:
        extra = {**extra, "ranks": distributed.world_size()}
    data = read_costs(folder)
    ended = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sessions = [*_sessions(data), {**cost.to_dict(), **extra, "ended": ended}]
    out = {
        "device": cost.device,
        "device_name": device_name(cost.device),
        "threads": cost.threads,
        "stages": stage_totals(sessions),
        "sessions": sessions,
    }
    write_json_atomic(Path(folder) / COSTS_FILE, out)
    return out


def stage_totals(sessions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per stage, over its sessions: times added up, peaks the largest (what the folder cost)."""
    totals: dict[str, dict[str, Any]] = {}
    for s in sessions:
        t = totals.setdefault(s["stage"], {"sessions": 0})
        t["sessions"] += 1
        for key in ("wall_s", "cpu_user_s", "cpu_sys_s"):
            t[key] = round(t.get(key, 0.0) + _num(s.get(key)), 3)
        t["cpu_s"] = round(t["cpu_user_s"] + t["cpu_sys_s"], 3)
        for key in ("peak_rss_mb", "peak_gpu_mb"):
            values = [v for v in (t.get(key), s.get(key)) if isinstance(v, int | float)]
            t[key] = max(values) if values else None
        t["device"] = s.get("device")
    return totals


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def stage_total(folder: str | Path, stage: str, key: str = "wall_s") -> float | None:
    """A stage's total `key` in folder/costs.json, or None when no session recorded it."""
    total = read_costs(folder).get("stages", {}).get(stage)
    value = total.get(key) if isinstance(total, dict) else None
    return float(value) if isinstance(value, int | float) else None
