"""Run a function as the ranks of a gloo process group on CPU (tests/ is on the path).

torch.multiprocessing.spawn starts fresh interpreters (the same as torchrun's workers) that
import this module by name; each rank joins the group through a file store in a temporary
folder, runs its part and leaves. Rank 0 writes what the test compares (safetensors).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import save_file
from toydata import shifted_toy

from meddistill.experts.config import BufferConfig, expert_train_config
from meddistill.experts.generate import generate_buffer
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.engine import Distiller
from meddistill.matching.loop import DistillRun
from meddistill.methods.registry import get_method
from meddistill.models import ModelSpec
from meddistill.training.evaluate import EvalConfig, evaluate_set

TINY_SPEC = ModelSpec(depth=1, width=4)
STRATEGY = "color_crop_cutout_flip_scale_rotate"


def spawn(fn: Any, world: int, folder: Path, *args: Any) -> None:
    """Run fn(rank, world, folder, *args) as `world` gloo ranks; fails if any rank fails.
    The ranks use this process's torch thread count: CPU results are bit-reproducible only
    at a fixed count, and the tests compare them with this process's own."""
    threads = torch.get_num_threads()
    mp.spawn(_rank, args=(fn, world, folder, args, threads), nprocs=world, join=True)


def _rank(rank: int, fn: Any, world: int, folder: Path, args: tuple, threads: int) -> None:
    torch.set_num_threads(threads)
    store = folder / f"store-{world}"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        fn(rank, world, folder, *args)
    finally:
        dist.destroy_process_group()


def buffer_config(num_experts: int = 2) -> BufferConfig:
    train = expert_train_config(6)
    train.batch_size = 16
    return BufferConfig(num_experts=num_experts, epochs=6, model=TINY_SPEC, train=train, seed=0)


def make_buffer(rank: int, world: int, folder: Path, out: str, num_experts: int) -> None:
    generate_buffer(shifted_toy(), buffer_config(num_experts), out, device="cpu", progress=False)


EXTRA = {"hoptm": {"kappa_mode": "quantile"}, "datm": {"growing_start": 2, "growing_end": 2}}


def method_config(method: str, windows: int, iterations: int = 4) -> Any:
    return get_method(method).make_config(
        dict(ipc=2, iterations=iterations, syn_steps=3, expert_epochs=2, max_start=3,
             checkpoint_every=2, windows_per_iteration=windows, **EXTRA.get(method, {}))
    )  # fmt: skip


def distill(
    buffer: str, windows: int, out: Path | None, iterations: int = 4, method: str = "hoptm"
) -> Any:
    """The synthetic set of `distiller`'s run."""
    return distiller(buffer, windows, out, iterations, method).run_all()


def distiller(
    buffer: str, windows: int, out: Path | None, iterations: int = 4, method: str = "hoptm"
) -> Distiller:
    """A distillation of the toy set with `windows` windows per iteration (HoP-TM: kappa and
    the cumulative mask; DATM: learned soft labels)."""
    cfg = method_config(method, windows, iterations)
    toy = shifted_toy()
    run = DistillRun(seed=0, out_dir=out, dsa_strategy=STRATEGY, method=method, progress=False)
    module = importlib.import_module(f"meddistill.methods.{method}")
    store = TrajectoryStore(buffer)
    parts = module.parts(cfg, toy, run)
    return Distiller(cfg, parts, toy, store, TINY_SPEC, device=torch.device("cpu"), run=run)


def set_tensors(syn: Any) -> dict[str, torch.Tensor]:
    return {"images": syn.images, "labels": syn.labels, "syn_lr": torch.tensor([syn.syn_lr])}


def distill_rank(
    rank: int, world: int, folder: Path, buffer: str, windows: int, tag: str, method: str
) -> None:
    syn = distill(buffer, windows, folder / f"run-{tag}", method=method)
    if rank == 0:
        save_file(set_tensors(syn), str(folder / f"{tag}.safetensors"))


def evaluate(images: torch.Tensor, labels: torch.Tensor) -> Any:
    cfg = EvalConfig(num_nets=3, epochs=3, models=["convnet"], batched=False, workers=1)
    return evaluate_set(images, labels, shifted_toy(), cfg, base_spec=TINY_SPEC, seed=1, lr=0.01,
                        progress=False)  # fmt: skip


def evaluate_rank(rank: int, world: int, folder: Path, tag: str) -> None:
    toy = shifted_toy()
    report = evaluate(toy.train.images[:12], toy.train.labels[:12])
    if rank == 0:
        accs = [n.acc for n in report.archs["convnet"].nets]
        losses = [n.train_loss for n in report.archs["convnet"].nets]
        as64 = dict(dtype=torch.float64)
        save_file({"acc": torch.tensor(accs, **as64), "loss": torch.tensor(losses, **as64)},
                  str(folder / f"{tag}.safetensors"))  # fmt: skip
