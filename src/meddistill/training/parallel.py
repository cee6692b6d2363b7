"""Run independent CPU jobs (the K networks of an evaluation, the experts of a buffer) in
one-thread worker processes.

Each job is the same single-threaded computation it would be in this process at one thread, so
results are bit-identical to the one-by-one run at `torch.set_num_threads(1)`; only wall time
changes. The shared inputs (tensors) travel once per worker through shared memory, not per job.
Workers come from a 'forkserver' context (a fresh server process, so no threads or CUDA state
are inherited), or 'spawn' where forkserver is unavailable.

An exception raised in a worker reaches the caller as the same exception (class, message and
attributes), e.g. one NumericalError, not a pool error. When worker processes cannot be started
(no fork/spawn allowed, daemon process, the pool breaks) one warning is logged and the remaining
jobs run in this process.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import pickle
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.multiprocessing  # noqa: F401 (registers the shared-memory tensor pickler)

from meddistill.errors import MeddistillError
from meddistill.memory import keep_freed_memory
from meddistill.utils import is_integer

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# What a worker process holds: the payload its initializer received (shared by every job).
_PAYLOAD: Any = None

# Imported once by the fork server, so that forked workers start with them: the main module
# (else each worker runs it again), this package, and torch._dynamo, which the first
# torch.optim optimiser imports lazily (about 2 s per process otherwise).
_PRELOAD = ["__main__", "torch", "torch._dynamo", "meddistill.training.evaluate"]

# Shared memory left free besides the payload (other processes use /dev/shm too).
_SHM_MARGIN = 64 << 20

# Failures of the pool machinery itself (not of a job): they trigger the in-process fallback.
_POOL_ERRORS = (OSError, BrokenProcessPool, AssertionError, pickle.PicklingError, RuntimeError)


def available_cores() -> int:
    """Cores this process may run on: the affinity mask where the OS has one, else cpu_count."""
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        count = min(count, len(os.sched_getaffinity(0)))
    return max(1, count)


def can_start_processes() -> bool:
    """False inside a daemonic process (a pool worker), which may not have children."""
    return not multiprocessing.current_process().daemon


def valid_workers(setting: Any) -> bool:
    """A `workers` option: auto, or an integer >= 1 (1: in this process)."""
    return setting == "auto" or (is_integer(setting) and setting >= 1)


def workers_for(setting: Any, jobs: int, device: torch.device) -> int:
    """Worker processes for `jobs` independent trainings on `device` under a `workers`
    option: 1 (in this process) on a GPU or for one job; auto = as many as usable cores."""
    if device.type != "cpu" or jobs <= 1:
        return 1
    if setting == "auto":
        return min(jobs, available_cores()) if can_start_processes() else 1
    return min(jobs, int(setting))


def shared_bytes(obj: Any) -> int:
    """Bytes of the CPU tensors in `obj` (dataclasses, tuples, lists, dicts) not yet in shared
    memory: what sending `obj` to the workers adds to /dev/shm."""
    if isinstance(obj, torch.Tensor):
        cpu = obj.device.type == "cpu" and not obj.is_shared()
        return obj.untyped_storage().nbytes() if cpu else 0
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sum(shared_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, dict):
        return sum(shared_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(shared_bytes(v) for v in obj)
    return 0


def shared_memory_free(path: str = "/dev/shm") -> int | None:
    """Free bytes of the shared-memory file system, or None where there is none to ask."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def _shared_memory_problem(payload: Any) -> str | None:
    """Why the payload cannot go to shared memory (a full /dev/shm kills with SIGBUS), or None."""
    need, free = shared_bytes(payload), shared_memory_free()
    if free is None or need + _SHM_MARGIN <= free:
        return None
    mib = 2**20
    return f"the data need {need / mib:.0f} MiB of shared memory, /dev/shm has {free / mib:.0f} MiB free"


@dataclass
class WorkerFailure:
    """An exception raised in a worker, in a form that always unpickles in the parent.

    Plain exception pickling re-calls `cls(*args)`, which fails for classes whose __init__
    takes other arguments (OptionError); this rebuilds the instance without calling __init__.
    """

    cls: type[BaseException]
    args: tuple[Any, ...]
    state: dict[str, Any] = field(default_factory=dict)
    trace: str = ""

    @classmethod
    def capture(cls, exc: BaseException) -> WorkerFailure:
        trace = "".join(traceback.format_exception(exc))
        failure = cls(type(exc), tuple(exc.args), dict(vars(exc)), trace)
        try:
            pickle.loads(pickle.dumps(failure))
        except Exception:  # a class or attribute that cannot travel: keep its text
            failure = cls(RuntimeError, (f"{type(exc).__name__}: {exc}",), {}, trace)
        return failure

    def rebuild(self, kind: str = "evaluation") -> BaseException:
        """The worker's exception; a non-meddistill one carries the worker's traceback as a note."""
        exc = self.cls.__new__(self.cls)
        exc.args = self.args
        exc.__dict__.update(self.state)
        if not isinstance(exc, MeddistillError) and self.trace:
            article = "an" if kind[:1] in "aeiou" else "a"
            exc.add_note(f"raised in {article} {kind} worker process:\n{self.trace.rstrip()}")
        return exc


def _init_worker(payload: Any) -> None:
    """Worker start: one torch thread (each job is a single-threaded computation), the payload."""
    global _PAYLOAD
    torch.set_num_threads(1)
    keep_freed_memory()
    _PAYLOAD = payload


def _call(fn: Callable[[Any, T], R], job: T) -> R | WorkerFailure:
    """Run one job in a worker; any exception comes back as a WorkerFailure value."""
    try:
        return fn(_PAYLOAD, job)
    except BaseException as exc:  # noqa: BLE001 (every failure must reach the parent)
        return WorkerFailure.capture(exc)


def _context() -> multiprocessing.context.BaseContext:
    """forkserver where the platform has it (workers fork from a clean server that already
    imported torch and this package), else spawn; never plain fork (threads, CUDA)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def _make_pool(workers: int, payload: Any) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=_context(), initializer=_init_worker, initargs=(payload,)
    )


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel pending jobs and end the workers now (a failed evaluation need not wait)."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()


class _PoolFailed(Exception):
    """The worker processes could not start or died; the jobs not yet done run in-process."""

    @classmethod
    def of(cls, exc: BaseException) -> _PoolFailed:
        """Named by the cause's first non-empty line (the log line stays one line)."""
        text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        return cls(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


@dataclass(frozen=True)
class _Wording:
    """How the log lines name the jobs: the kind of worker and the jobs' plural."""

    kind: str = "evaluation"
    items: str = "network(s)"


def _pool_results(
    fn: Callable[[Any, T], R], payload: Any, jobs: list[T], workers: int, ordered: bool, kind: str
) -> Iterator[tuple[int, R]]:
    """(index, fn(payload, job)) of every job, computed by `workers` processes: in job order,
    or as each finishes (`ordered` False)."""
    try:
        pool = _make_pool(workers, payload)
    except _POOL_ERRORS as exc:
        raise _PoolFailed.of(exc) from exc
    finished = False
    try:
        try:
            futures: dict[Future, int] = {
                pool.submit(_call, fn, job): i for i, job in enumerate(jobs)
            }
        except _POOL_ERRORS as exc:
            raise _PoolFailed.of(exc) from exc
        for future in list(futures) if ordered else as_completed(futures):
            try:
                outcome = future.result()
            except _POOL_ERRORS as exc:
                raise _PoolFailed.of(exc) from exc
            if isinstance(outcome, WorkerFailure):
                raise outcome.rebuild(kind) from None
            yield futures[future], outcome
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:
            _stop(pool)


def run_jobs(
    fn: Callable[[Any, T], R],
    payload: Any,
    jobs: list[T],
    workers: int,
    *,
    local: Callable[[T], R],
) -> Iterator[R]:
    """Yield fn(payload, job) for each job, in order, from `workers` worker processes.

    `fn` must be a module-level function (workers import it by name) and `payload` picklable
    (tensors go through shared memory). `local(job)` computes one job in this process: used for
    every job when workers <= 1, and for the jobs left when the pool cannot start or breaks.
    """
    for _, result in _run(fn, payload, jobs, workers, local, ordered=True, wording=_Wording()):
        yield result


def run_jobs_as_done(
    fn: Callable[[Any, T], R],
    payload: Any,
    jobs: list[T],
    workers: int,
    *,
    local: Callable[[T], R],
    kind: str,
    items: str,
) -> Iterator[tuple[int, R]]:
    """Yield (index in jobs, fn(payload, job)) as each job finishes, so the caller can keep
    each result at once (a kill then loses only the jobs in progress). As run_jobs otherwise;
    `kind` and `items` name the workers and jobs in the log ("expert", "expert(s)")."""
    wording = _Wording(kind, items)
    yield from _run(fn, payload, jobs, workers, local, ordered=False, wording=wording)


def _run(
    fn: Callable[[Any, T], R],
    payload: Any,
    jobs: list[T],
    workers: int,
    local: Callable[[T], R],
    ordered: bool,
    wording: _Wording,
) -> Iterator[tuple[int, R]]:
    """run_jobs' work: the pool, then in this process every job it did not finish."""
    done: set[int] = set()
    problem = _shared_memory_problem(payload) if workers > 1 and jobs else None
    if problem is not None:
        log.warning("no %s worker processes: %s; running %d %s in this process",
                    wording.kind, problem, len(jobs), wording.items)  # fmt: skip
        workers = 1
    if workers > 1 and jobs:
        try:
            for index, result in _pool_results(fn, payload, jobs, workers, ordered, wording.kind):
                done.add(index)
                yield index, result
        except _PoolFailed as exc:
            log.warning(
                "%s worker processes failed (%s); running the remaining %d %s in this process",
                wording.kind,
                exc,
                len(jobs) - len(done),
                wording.items,
            )
    for index, job in enumerate(jobs):
        if index not in done:
            yield index, local(job)
