"""Issue 10: `meddistill baseline` keeps every random subset it evaluates as a synthetic-set
folder with class grids, bit for bit the subset evaluated, exportable like a distilled set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from imagefolders import image_folder
from toydata import shifted_toy

from meddistill.cli import main
from meddistill.data.synthetic import SyntheticSet
from meddistill.models import ModelSpec
from meddistill.training import baselines as baselines_mod
from meddistill.training.baselines import baseline, random_subset
from meddistill.training.evaluate import EvalConfig
from meddistill.utils import derive_seed, make_generator

TINY_EVAL = EvalConfig(num_nets=1, epochs=1, batch_size=8, dsa=False)


def spy_evaluated(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """(images, labels, dataset) of every set the baseline hands to evaluate_set."""
    seen: list[tuple[Any, ...]] = []
    real = baselines_mod.evaluate_set

    def spy(images: torch.Tensor, labels: torch.Tensor, dataset: Any, *a: Any, **kw: Any):
        seen.append((images.clone(), labels.clone(), dataset))
        return real(images, labels, dataset, *a, **kw)

    monkeypatch.setattr(baselines_mod, "evaluate_set", spy)
    return seen


def test_on_subset_gets_each_draw_exactly_as_evaluated(monkeypatch) -> None:
    ds, kept = shifted_toy(), []
    seen = spy_evaluated(monkeypatch)
    baseline(
        ds, base_spec=ModelSpec(name="convnet", depth=1, width=4), ipcs=[2], eval_cfg=TINY_EVAL,
        full=None, seed=3, num_subsets=2, progress=False, device="cpu",
        on_subset=lambda *args: kept.append(args),
    )  # fmt: skip
    assert [(ipc, j) for ipc, j, *_ in kept] == [(2, 0), (2, 1)]
    for (ipc, j, seed, index, images, labels), evaluated in zip(kept, seen, strict=True):
        ev_images, ev_labels, _ = evaluated
        assert seed == derive_seed(3, "random", ipc, j)
        again = random_subset(ds, ipc, generator=make_generator(seed))  # the same draw
        for a, b in ((images, ev_images), (labels, ev_labels), (images, again[0])):
            assert a.dtype == b.dtype and torch.equal(a, b)
        assert torch.equal(ds.train.images[index], images)
    assert not torch.equal(kept[0][4], kept[1][4])  # two draws, two subsets


def test_cli_baseline_saves_random_subsets_that_export(workdir, monkeypatch, capsys) -> None:
    ds = image_folder(workdir / "ds", {"a": 4, "b": 4, "c": 4})
    seen = spy_evaluated(monkeypatch)
    argv = ["baseline", "--dataset", f"folder:{ds}", "--ipc", "1", "2", "--no-full", "--seed", "4"]
    argv += ["model.width=4", "eval.epochs=1", "eval.num_nets=1", "--no-progress"]
    assert main(argv) == 0
    run = Path(capsys.readouterr().out.splitlines()[-1].removeprefix("results: ")).parent
    rows = json.loads((run / "results.json").read_text())["rows"]
    for row, (ev_images, ev_labels, dataset) in zip(rows, seen, strict=True):
        ipc, seed = row["ipc"], derive_seed(4, "random", row["ipc"], 0)
        folder = run / f"random_ipc{ipc}" / "draw_0"
        assert row["sets"] == [
            {"draw": 0, "seed": seed, "synthetic": str(folder / "synthetic"),
             "grids": str(folder / "grids")}
        ]  # fmt: skip
        syn = SyntheticSet.load(folder / "synthetic")
        assert torch.equal(syn.images, ev_images) and torch.equal(syn.labels, ev_labels)
        again = random_subset(dataset, ipc, generator=make_generator(seed))
        assert torch.equal(syn.images, again[0]) and torch.equal(syn.labels, again[1])
        assert syn.meta["method"] == "random" and syn.meta["ipc"] == ipc
        assert syn.meta["seed"] == seed and syn.syn_lr is None
        assert len(syn.meta["train_indices"]) == 3 * ipc
        assert (folder / "grids" / "all.png").is_file()
        assert len(list((folder / "grids").glob("class_*.png"))) == 3
        out = workdir / f"random{ipc}.npz"
        assert main(["export", str(folder / "synthetic"), "--out", str(out)]) == 0
        with np.load(out) as npz:
            assert npz["train_images"].shape == (3 * ipc, 8, 8, 3)
            assert npz["train_labels"].ravel().tolist() == syn.labels.tolist()


def test_baseline_rows_report_val_beside_test_and_leave_it_out_without_one() -> None:
    from meddistill.data.dataset import MedicalDataset, Split
    from meddistill.training.config import TrainConfig

    toy = shifted_toy()
    val = Split(toy.test.images[:12].clone(), toy.test.labels[:12].clone())
    with_val = MedicalDataset(
        "toy", {**toy.splits, "val": val}, toy.class_names, toy.normalization, source_id="toy-v"
    )
    full = TrainConfig(epochs=1, lr=0.01, batch_size=16, dsa=False)
    spec = ModelSpec(name="convnet", depth=1, width=4)
    report = baseline(with_val, base_spec=spec, ipcs=[1], eval_cfg=TINY_EVAL, full=full,
                      seed=0, full_nets=2, progress=False)  # fmt: skip
    nets = report["full"]["nets"]
    assert all(0.0 <= n["val_acc"] <= 1.0 for n in nets)
    assert report["full"]["val_acc_mean"] == pytest.approx(np.mean([n["val_acc"] for n in nets]))
    pooled = report["random"]["1"]["archs"]["convnet"]
    assert {"acc_mean", "val_acc_mean", "val_auc_std"} <= set(pooled)
    plain = baseline(toy, base_spec=spec, ipcs=[1], eval_cfg=TINY_EVAL, full=full,
                     seed=0, full_nets=1, progress=False)  # fmt: skip
    assert "val_acc" not in plain["full"]["nets"][0] and "val_acc_mean" not in plain["full"]
    # test numbers do not depend on whether val is scored
    assert plain["full"]["nets"][0]["acc"] == nets[0]["acc"]
