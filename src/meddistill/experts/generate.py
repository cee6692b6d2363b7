"""Train the experts of a buffer, resumably: one after the other, or on CPU in one-thread
worker processes (cfg.workers), each expert's file written as soon as it is finished.

Expert i is fully determined by derive_seed(cfg.seed, "expert", i): its initialisation, its
batch order and its DSA draws all come from that seed, so a resumed run produces the same files
as an uninterrupted one, and the same seed gives bit-identical trajectories on CPU (a worker
runs the same single-threaded computation as the one-by-one run at one thread).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from meddistill import __version__, distributed
from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ExpertBufferError
from meddistill.experts.config import BufferConfig
from meddistill.experts.private import buffer_dp_plan, dp_identity, privacy_record
from meddistill.experts.store import (
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    NO_VAL_NOTE,
    TrajectoryStore,
    read_meta,
    record_expert_summaries,
    write_expert,
)
from meddistill.locking import folder_lock
from meddistill.models import ParamLayout, build_model_for, flatten_params
from meddistill.training import parallel
from meddistill.training.dp import DPPlan, PrivateTraining
from meddistill.training.dp_loop import train_private
from meddistill.training.loop import train_network
from meddistill.training.metrics import evaluate_model
from meddistill.utils import derive_seed, make_generator, stable_hash, write_json_atomic

_DTYPES = {"float32": torch.float32, "float16": torch.float16}

# workers=auto keeps experts smaller than this in this process (train pixels x epochs of one
# expert): starting a worker (a process that imports torch) costs seconds, more than training
# such an expert. Explicit worker counts are always honoured.
_MIN_AUTO_WORK = 1 << 20


def buffer_identity(dataset: MedicalDataset, cfg: BufferConfig) -> dict[str, Any]:
    """Everything that decides the contents of an expert file; its hash is the buffer_id.

    The number of experts is not part of it (expert i does not depend on how many there are,
    so a buffer can be extended), nor is the package version (recorded, not compared); except
    for DP experts, whose noise is calibrated for all of them: `dp` (only when set) holds the
    DP settings with the resolved delta and the number of experts the guarantee covers.
    """
    identity = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": {
            "name": dataset.name,
            "source_id": dataset.source_id,
            "normalization": dataset.normalization.to_dict(),
            "image_shape": list(dataset.image_shape),
            "num_classes": dataset.num_classes,
        },
        "model": to_dict(cfg.model),
        "train": to_dict(cfg.train),
        "epochs": int(cfg.epochs),
        "dtype": cfg.dtype,
        "seed": int(cfg.seed),
    }
    if cfg.dp is not None:
        identity["dp"] = dp_identity(dataset, cfg)
    return identity


def _build(
    dataset: MedicalDataset, cfg: BufferConfig, seed: int, device: torch.device
) -> nn.Module:
    return build_model_for(cfg.model, dataset, seed=seed, device=device)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return out


def _prepare_folder(
    out: Path, dataset: MedicalDataset, cfg: BufferConfig, plan: DPPlan | None
) -> None:
    identity = buffer_identity(dataset, cfg)
    buffer_id = stable_hash(identity)
    meta_path = out / META_FILE
    if out.exists() and not out.is_dir():
        raise ExpertBufferError(f"{out} is a file, not a folder; choose a folder for the buffer")
    if meta_path.exists():
        meta = read_meta(out)
        if meta.get("buffer_id") != buffer_id:
            old = {k: meta.get(k) for k in identity}
            diff = "; ".join(_differences(old, identity)) or "buffer_id differs"
            raise ExpertBufferError(
                f"{out} already holds a buffer made with other settings ({diff}); choose another "
                f"folder or delete {out} to start over"
            )
        if meta.get("num_experts", 0) < cfg.num_experts:
            meta["num_experts"] = int(cfg.num_experts)
            write_json_atomic(meta_path, meta)
        return
    if out.exists() and any(out.glob("expert_*.safetensors")):
        raise ExpertBufferError(
            f"{out} holds expert files but no {META_FILE}; choose another folder or delete {out}"
        )
    probe = _build(dataset, cfg, 0, torch.device("cpu"))
    layout = ParamLayout.from_model(probe)
    meta = {
        **identity,
        "buffer_id": buffer_id,
        "num_experts": int(cfg.num_experts),
        "num_params": layout.total,
        "param_layout": layout.to_dict(),
        "optimizer": cfg.train.optimizer,
        "privacy": privacy_record(plan),
        "package_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(meta_path, meta)


def train_expert(
    dataset: MedicalDataset,
    cfg: BufferConfig,
    index: int,
    *,
    device: torch.device,
    progress: bool = True,
    dp: DPPlan | None = None,
) -> tuple[torch.Tensor, dict[str, Any], int]:
    """Train expert `index`; return (trajectory [E+1, P] in cfg.dtype on CPU, history, seed).

    Training is watched on the validation split (choose on validation); the test split is
    evaluated once, on the final network, as a number to report. Without a validation split
    nothing held out is watched per epoch, and the history says so (never the test split).
    With cfg.dp the expert trains with DP-SGD at the noise of `dp` (buffer_dp_plan's,
    calibrated for all experts; computed here when not given).
    """
    seed = derive_seed(cfg.seed, "expert", index)
    dtype = _DTYPES[cfg.dtype]
    model = _build(dataset, cfg, seed, device)
    rows = [flatten_params(model).to("cpu", dtype)]
    val = dataset.val
    init = evaluate_model(model, val.images, val.labels) if val is not None else None

    def record(epoch: int, net: nn.Module) -> None:
        rows.append(flatten_params(net).to("cpu", dtype))

    loop: dict[str, Any] = dict(
        generator=make_generator(derive_seed(seed, "train")),
        test_split=val,  # the loop's held-out split, here the validation split
        eval_every=1 if val is not None else 0,
        on_epoch=record,
        progress=f"expert {index}" if progress else False,
    )
    images, labels = dataset.train.images, dataset.train.labels
    if cfg.dp is not None:
        plan = dp if dp is not None else buffer_dp_plan(dataset, cfg)
        assert plan is not None
        private = PrivateTraining(plan, cfg.dp.secret("expert", index))
        result = train_private(model, images, labels, cfg.train, private, **loop)
    else:
        compile = cfg.compile_on(len(labels), device)
        result = train_network(model, images, labels, cfg.train, compile=compile, **loop)
    final_test = evaluate_model(model, dataset.test.images, dataset.test.labels)
    return torch.stack(rows), _history(result.history, init, final_test), seed


def _history(
    epochs: list[dict[str, float]],
    init: dict[str, float] | None,
    final_test: dict[str, float],
) -> dict[str, Any]:
    """The expert-file history: index e = after epoch e (0 = initialisation). The loop names
    its held-out metrics test_*; here they were measured on the validation split."""
    history: dict[str, Any] = {
        "held_out": "val" if init is not None else None,
        "train_loss": [None] + [h["loss"] for h in epochs],
        "train_acc": [None] + [h["acc"] for h in epochs],
        "val_acc": None,
        "val_auc": None,
        "final_test_acc": final_test["acc"],
        "final_test_auc": final_test["auc"],
    }
    if init is not None:
        history["val_acc"] = [init["acc"]] + [h["test_acc"] for h in epochs]
        history["val_auc"] = [init["auc"]] + [h["test_auc"] for h in epochs]
    else:
        history["held_out_note"] = NO_VAL_NOTE
    return history


def generate_buffer(
    dataset: MedicalDataset,
    cfg: BufferConfig,
    out_dir: str | Path,
    *,
    device: torch.device | str,
    progress: bool = True,
) -> TrajectoryStore:
    """Train `cfg.num_experts` experts on dataset.train into `out_dir` and return its store.

    Re-running the same command resumes: finished experts are kept, so a killed run loses at
    most the experts in progress (one per worker). A folder holding a buffer made with other settings is refused.
    One writer per folder: a second process on the same folder is refused (folder lock).
    """
    out = Path(out_dir)
    with folder_lock(out, "expert buffer"):  # also removes temporaries a kill left behind
        return _generate(dataset, cfg, out, torch.device(device), progress)


def _generate(
    dataset: MedicalDataset, cfg: BufferConfig, out: Path, device: torch.device, progress: bool
) -> TrajectoryStore:
    """generate_buffer's work, under the folder's lock."""
    plan = buffer_dp_plan(dataset, cfg)
    main = distributed.is_main()
    if main:  # under torchrun rank 0 prepares the folder; every rank then trains its share
        _prepare_folder(out, dataset, cfg, plan)
        record_expert_summaries(out)  # experts finished before a kill, or by older meddistill
    distributed.barrier()
    store = TrajectoryStore(out)
    todo = distributed.share([i for i in range(cfg.num_experts) if i not in set(store.expert_ids)])
    data = dataset.to(device)
    with tqdm(
        total=len(todo),
        desc="experts",
        disable=not progress,
        unit="expert",
    ) as bar:
        trained = _trained(data, cfg, plan, todo, device, progress)
        for index, (trajectory, history, seed) in trained:
            write_expert(
                out,
                index,
                torch.as_tensor(trajectory),
                buffer_id=store.buffer_id,
                seed=seed,
                history=history,
            )
            if main:
                record_expert_summaries(out)
            bar.update(1)
            bar.set_postfix(_postfix(history))
    distributed.barrier()  # every rank's experts are written
    if main and distributed.world_size() > 1:
        record_expert_summaries(out)
    distributed.barrier()
    return TrajectoryStore(out)


def expert_workers(
    dataset: MedicalDataset, cfg: BufferConfig, jobs: int, device: torch.device
) -> int:
    """Worker processes for `jobs` experts: cfg's choice, except tiny experts under auto."""
    work = dataset.train.images[0].numel() * len(dataset.train.labels) * cfg.epochs
    if cfg.workers == "auto" and work < _MIN_AUTO_WORK:
        return 1
    return cfg.workers_for(jobs, device)


def _trained(
    data: MedicalDataset,
    cfg: BufferConfig,
    plan: DPPlan | None,
    todo: list[int],
    device: torch.device,
    progress: bool,
) -> Iterator[tuple[int, tuple[Any, dict[str, Any], int]]]:
    """(index, train_expert's result) of each expert in `todo`, as each finishes (in any order
    with workers), so the caller writes it at once and a kill loses only experts in progress."""

    def local(index: int) -> tuple[Any, dict[str, Any], int]:
        return train_expert(data, cfg, index, device=device, progress=progress, dp=plan)

    workers = expert_workers(data, cfg, len(todo), device)
    payload = (data, cfg, plan)
    results = parallel.run_jobs_as_done(
        _train_in_worker, payload, todo, workers, local=local, kind="expert", items="expert(s)"
    )
    for position, result in results:
        yield todo[position], result


def _train_in_worker(
    payload: tuple[MedicalDataset, BufferConfig, DPPlan | None], index: int
) -> tuple[Any, dict[str, Any], int]:
    """One expert in a worker process (CPU, one thread, no progress bar). The trajectory comes
    back as a numpy array, pickled by value: no shared-memory handle has to outlive the worker."""
    dataset, cfg, plan = payload
    trajectory, history, seed = train_expert(
        dataset, cfg, index, device=torch.device("cpu"), progress=False, dp=plan
    )
    return trajectory.numpy(), history, seed


def _postfix(history: dict[str, Any]) -> dict[str, str]:
    """The progress bar shows validation accuracy, or train accuracy without a val split."""
    if history.get("val_acc"):
        return {"val_acc": f"{100 * history['val_acc'][-1]:.1f}%"}
    return {"train_acc": f"{100 * history['train_acc'][-1]:.1f}%"}
