"""Tiny run and benchmark folders, written with the package's own writers, for report tests.

Class 0 of the synthetic set is one solid colour (MAGENTA) so a screenshot can find it; the
second class name holds HTML so escaping can be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from meddistill.bench.db import Artifact, Result, ResultsDB
from meddistill.data.dataset import Normalization
from meddistill.data.grids import save_class_grids
from meddistill.data.results import write_results
from meddistill.data.snapshots import save_snapshot
from meddistill.data.synthetic import SyntheticSet

MAGENTA = (230, 20, 160)
NORM = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
EVIL = 'beta <script>alert("x")</script> & co'
CLASS_NAMES = ["alpha", EVIL]
SIZE = 8
ACCS = [0.60, 0.65, 0.625]  # per network: mean 0.625


def synthetic_images(ipc: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: solid MAGENTA (exact after the grid's uint8 rounding); class 1: noise."""
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.rand(2 * ipc, 3, SIZE, SIZE, generator=gen)
    colour = torch.tensor(MAGENTA, dtype=torch.float32).view(1, 3, 1, 1) / 255.0
    pixels[:ipc] = colour
    labels = torch.arange(2).repeat_interleave(ipc)
    return NORM.apply(pixels), labels


def metrics_records(
    iterations: int = 20, eval_at: tuple[int, ...] = (10,), mask: bool = False
) -> list[dict]:
    """The engine's records; mask=True: HoP-TM's, whose mask grows from 3 % of the parameters
    (mask_utilisation) while the loss over the masked ones rises and the step size is learned."""
    out: list[dict] = []
    for it in range(iterations):
        out.append(
            {
                "time": 1000.0 + it,
                "stage": "distill",
                "iteration": it,
                "loss": 1.0 / (it + 1),
                "match_loss": 0.9 / (it + 1),
                "shape_loss": 0.01,
                "overlap_loss": 0.0,
                "mask_utilisation": 1.0,
                "syn_lr": 0.01,
                "skipped": False,
                "seconds": 0.5,
            }
        )
        if mask:
            coverage = 0.03 + 0.97 * it / max(1, iterations - 1)
            out[-1].update(
                loss=0.003 + 0.5 * coverage, match_loss=0.003 + 0.5 * coverage,
                mask_utilisation=coverage, syn_lr=0.01 + 0.0001 * it,
            )  # fmt: skip
        if it + 1 in eval_at:
            out.append(
                {
                    "stage": "eval",
                    "iteration": it + 1,
                    "convnet": {"acc_mean": 0.5, "acc_std": 0.02, "auc_mean": 0.7, "auc_std": 0.01},
                }
            )
    out.append(
        {
            "stage": "final_eval",
            "convnet": {"acc_mean": 0.625, "acc_std": 0.0204, "auc_mean": 0.8, "auc_std": 0.01},
        }
    )
    return out


def make_run(
    folder: Path,
    *,
    method: str = "hoptm",
    ipc: int = 2,
    finished: bool = True,
    snapshots: bool = True,
    mask: bool = False,
) -> Path:
    """A distillation run folder as jobs.run_distill leaves it (tiny)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "job": {"method": method, "dataset": {"name": "toy"}, "final_eval": True},
        "match": {"ipc": ipc, "iterations": 20, "lr_img": 100.0},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "env.json").write_text(json.dumps({"torch": "x", "python": "3.11"}))
    (folder / "log.txt").write_text("2026-01-01 INFO started <run>\n")
    records = metrics_records(mask=mask)
    if not finished:
        records = [r for r in records if r.get("stage") == "distill"][:8]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    images, labels = synthetic_images(ipc)
    if snapshots:
        for it, shift in ((0, 0.0), (10, 0.5), (20, 1.0)):
            save_snapshot(
                folder, it, images + shift * torch.arange(images.shape[0]).view(-1, 1, 1, 1), labels
            )
    if not finished:
        return folder
    syn = SyntheticSet(
        images=images,
        labels=labels,
        normalization=NORM,
        class_names=CLASS_NAMES,
        dataset="toy",
        source_id="toy-source",
        syn_lr=0.0123,
        meta={"method": method, "iteration": 20},
    )
    syn.save(folder / "synthetic")
    save_class_grids(images, labels, CLASS_NAMES, NORM, folder / "grids")
    nets = [{"index": k, "acc": a, "auc": 0.8, "loss": 1.0} for k, a in enumerate(ACCS)]
    results = {
        "method": method,
        "dataset": "toy",
        "ipc": ipc,
        "syn_lr": 0.0123,
        "buffer_s": 0.0,
        "distill_s": 10.0,
        "rows": [
            {
                "set": method,
                "ipc": ipc,
                "lr": 0.0123,
                "archs": {
                    "convnet": {
                        "acc_mean": 0.625,
                        "acc_std": 0.0204,
                        "auc_mean": 0.8,
                        "auc_std": 0.0,
                        "nets": nets,
                    }
                },
            }
        ],
    }
    write_results(folder, results)
    return folder


def make_baseline_run(
    folder: Path,
    *,
    ipc: int = 2,
    full: float = 0.85,
    random: float = 0.85,
    source_id: str | None = None,
) -> Path:
    """A `meddistill baseline` folder: full-data and random rows whose networks live in the
    baseline report (detail), no synthetic set, no distillation steps. full, random: the
    rows' mean accuracies (std 0.05, two networks each)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"job": {"ipcs": [ipc]}}))
    nets = [{"seed": k, "acc": a, "auc": 0.9, "loss": 0.1} for k, a in enumerate((0.9, 0.8))]

    def stats(acc: float) -> dict:
        return {"acc_mean": acc, "acc_std": 0.05, "auc_mean": 0.9, "auc_std": 0.0, "num_nets": 2}

    subsets = [
        {"seed": k, "report": {"archs": {"convnet": {"nets": [{"acc": a, "auc": 0.7}]}}}}
        for k, a in enumerate((0.4, 0.5))
    ]
    detail = {
        "full": {"nets": nets, **stats(full), "train": {"epochs": 30}},
        "random": {str(ipc): {"subsets": subsets, "archs": {"convnet": stats(random)}}},
        "eval": {"epochs": 300},
    }
    rows = [
        {"set": "full", "ipc": None, "archs": {"convnet": stats(full)}, "detail": detail},
        {"set": "random", "ipc": ipc, "archs": {"convnet": stats(random)}, "detail": detail},
    ]
    dataset = {"name": "toy", **({"source_id": source_id} if source_id else {})}
    write_results(folder, {"dataset": dataset, "rows": rows, "run_dir": str(folder)})
    return folder


def make_benchmark(folder: Path) -> Path:
    """runs/results.sqlite with full, random, mtt and hoptm on one dataset, two archs, and the
    run folders of the synthetic sets under runs/distill/."""
    folder.mkdir(parents=True, exist_ok=True)
    db = ResultsDB(folder / "results.sqlite")
    db.add_eval("ev", {"epochs": 2})
    accs = {
        ("full", None): [0.90, 0.92],
        ("random", 2): [0.30, 0.40],
        ("mtt", 2): [0.50, 0.60],
        ("hoptm", 2): [0.70, 0.72],
    }
    for (method, ipc), values in accs.items():
        path = None
        if method not in ("full", "random"):
            run = make_run(folder / "distill" / f"toy-{method}", method=method, snapshots=False)
            path = run / "synthetic"
        art_id = f"{method}-{ipc}"
        db.add_artifact(
            Artifact(
                id=art_id,
                kind="baseline" if path is None else "synthetic",
                dataset="toy",
                method=method,
                ipc=ipc,
                seed=0,
                setting=f"s-{method}-{ipc}",
                path=str(path) if path else None,
                wall_s=5.0,
            )
        )
        db.add_grid_cell("g", art_id, "ev")
        for arch, shift in (("convnet", 0.0), ("lenet", -0.1)):
            for k, acc in enumerate(values):
                db.add_result(
                    Result(
                        artifact_id=art_id,
                        arch=arch,
                        eval_id="ev",
                        eval_seed=k,
                        net_index=k,
                        acc=acc + shift,
                        auc=0.5,
                        loss=1.0,
                        epochs=2,
                        lr=0.01,
                    )
                )
    db.close()
    return folder
