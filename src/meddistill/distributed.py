"""One job on several processes: torchrun / torch.distributed (gloo on CPU, NCCL on CUDA).

Why here, in one place: every stage asks the same three questions (which share of the work is
mine, does this process write files, how do the shares meet again), and the answers must be
the same everywhere so that a job started with `torchrun --nproc_per_node N -m meddistill ...`
writes each file once (rank 0: run folders, checkpoints, results; each rank its own expert
files) and ends as a single-process run would. Without torchrun (no WORLD_SIZE in the
environment, or 1) every function here is the single-process identity.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from meddistill.errors import ConfigError, RankLost

T = TypeVar("T")

# How long a rank waits for the others at a collective before the job fails (a killed rank
# otherwise leaves the rest waiting for ever); torchrun usually stops them sooner.
TIMEOUT = datetime.timedelta(minutes=30)


def world_size() -> int:
    """How many processes share the job (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without torch.distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the job's shared files (run folder, checkpoints, results)."""
    return rank() == 0


def launched() -> bool:
    """Whether torchrun (or another launcher) asked for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: str | None = None) -> int:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...);
    NCCL when this process computes on CUDA, gloo otherwise. Returns the world size."""
    if not launched() or dist.is_initialized():
        return world_size()
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run one process")
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith(("auto", "cuda")))
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return world_size()


def shutdown() -> None:
    """Leave the process group (the CLI's last step under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def share(items: Sequence[T]) -> list[T]:
    """This rank's share of `items`: every world_size-th one, starting at its rank."""
    return list(items[rank() :: world_size()])


def block(count: int) -> range:
    """This rank's contiguous block of `count` items (count must split evenly)."""
    size = count // world_size()
    return range(rank() * size, (rank() + 1) * size)


def _collective(what: str, call: Any, *args: Any) -> Any:
    """Run a collective; a rank that is gone becomes one RankLost line."""
    try:
        return call(*args)
    except RuntimeError as err:  # gloo and NCCL report a lost peer so
        detail = str(err).splitlines()[0][:160]
        raise RankLost(
            f"rank {rank()}: lost another rank of the job while {what} ({detail}); the job "
            "stops: run the same command again to resume from the last checkpoint"
        ) from err


def barrier() -> None:
    """Wait until every rank reaches this point."""
    if world_size() > 1:
        _collective("waiting at a barrier", dist.barrier)


def gather_objects(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank (small picklable values)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    _collective("gathering results", dist.all_gather_object, out, obj)
    return out


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's rows [k, D] stacked in rank order, [world_size * k, D], on every rank."""
    if world_size() == 1:
        return rows
    parts = [torch.empty_like(rows) for _ in range(world_size())]
    _collective("averaging the windows' gradients", dist.all_gather, parts, rows.contiguous())
    return torch.cat(parts)
