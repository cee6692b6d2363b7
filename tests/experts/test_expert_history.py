"""Issue 10: experts are watched on the validation split, tested once at the end, and summed
up in buffer.json's `experts`; buffers written before (per-epoch test_acc) still read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from toydata import shifted_toy

from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ExpertBufferError
from meddistill.experts import BufferConfig, TrajectoryStore, generate_buffer
from meddistill.experts import generate as generate_mod
from meddistill.experts.config import expert_train_config
from meddistill.experts.store import (
    META_FILE,
    NO_VAL_NOTE,
    OLD_HELD_OUT,
    read_meta,
    validate_buffer_meta,
    write_expert,
)
from meddistill.models import ModelSpec, build_model_for, load_flat_
from meddistill.training import loop as loop_mod
from meddistill.training.metrics import evaluate_model

SPEC = ModelSpec(name="convnet", depth=1, width=4)
EPOCHS = 2
N_TRAIN, N_VAL, N_TEST = 30, 12, 15  # distinct sizes tell the splits apart in the spy


def toy(with_val: bool = True) -> MedicalDataset:
    """shifted_toy's train and test, plus a validation split drawn from another seed."""
    base = shifted_toy(seed=0, n_train=N_TRAIN, n_test=N_TEST)
    splits = {"train": base.train, "test": base.test}
    if with_val:
        splits["val"] = shifted_toy(seed=1, n_train=N_VAL, n_test=3).train
    return dataclasses.replace(base, splits=splits)


def cfg(num_experts: int = 2) -> BufferConfig:
    train = dataclasses.replace(expert_train_config(), batch_size=8)
    return BufferConfig(num_experts=num_experts, epochs=EPOCHS, model=SPEC, train=train, seed=5)


def spy_evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record which split every evaluate_model call (loop and expert code) looked at."""
    seen: list[str] = []
    names = {N_TRAIN: "train", N_VAL: "val", N_TEST: "test"}

    def spy(model: Any, images: torch.Tensor, labels: torch.Tensor, **kw: Any) -> dict:
        seen.append(names[images.shape[0]])
        return evaluate_model(model, images, labels, **kw)

    monkeypatch.setattr(loop_mod, "evaluate_model", spy)
    monkeypatch.setattr(generate_mod, "evaluate_model", spy)
    return seen


def metrics_at(store: TrajectoryStore, ds: MedicalDataset, expert: int, epoch: int, split: str):
    net = build_model_for(SPEC, ds, seed=0, device=torch.device("cpu"))
    load_flat_(net, store.load(expert, epoch))
    part = ds.splits[split]
    return evaluate_model(net, part.images, part.labels)


def test_val_each_epoch_test_once_and_summary_in_buffer_json(tmp_path, monkeypatch) -> None:
    ds = toy()
    seen = spy_evaluations(monkeypatch)
    store = generate_buffer(ds, cfg(), tmp_path / "buf", device="cpu", progress=False)
    # per expert: val at init and after each epoch, test once on the final network
    assert seen == (["val"] * (EPOCHS + 1) + ["test"]) * 2
    meta = read_meta(store.path)  # validated, `experts` included
    assert [e["index"] for e in meta["experts"]] == [0, 1]
    for i, entry in enumerate(meta["experts"]):
        hist = store.history(i)
        assert hist["held_out"] == "val" and "test_acc" not in hist
        assert len(hist["val_acc"]) == len(hist["train_acc"]) == EPOCHS + 1
        for e in (0, EPOCHS):
            assert hist["val_acc"][e] == metrics_at(store, ds, i, e, "val")["acc"]
        assert hist["final_test_acc"] == metrics_at(store, ds, i, EPOCHS, "test")["acc"]
        assert entry == {
            "index": i,
            "seed": store.expert_seed(i),
            "held_out": "val",
            "final_train_acc": hist["train_acc"][-1],
            "final_val_acc": hist["val_acc"][-1],
            "final_test_acc": hist["final_test_acc"],
            "val_acc": hist["val_acc"],
        }


def test_without_val_split_nothing_held_out_per_epoch_and_it_says_so(tmp_path, monkeypatch):
    seen = spy_evaluations(monkeypatch)
    store = generate_buffer(
        toy(with_val=False), cfg(1), tmp_path / "b", device="cpu", progress=False
    )
    assert seen == ["test"]  # never the test split per epoch in place of a missing val split
    hist = store.history(0)
    assert hist["held_out"] is None and hist["val_acc"] is None
    assert hist["held_out_note"] == NO_VAL_NOTE and 0.0 <= hist["final_test_acc"] <= 1.0
    (entry,) = read_meta(store.path)["experts"]
    assert entry["final_val_acc"] is None and entry["val_acc"] is None
    assert entry["note"] == NO_VAL_NOTE and entry["final_test_acc"] == hist["final_test_acc"]


def _as_old_format(folder: Path, store: TrajectoryStore, expert: int) -> dict[str, Any]:
    """Rewrite an expert file and buffer.json as meddistill wrote them before issue 10."""
    hist = store.history(expert)
    old = {
        "test_acc": [0.25, 0.5, 0.75],
        "test_auc": [0.5, 0.6, None],
        "train_loss": hist["train_loss"],
        "train_acc": hist["train_acc"],
    }
    traj = store.load_many(expert, list(range(EPOCHS + 1)))
    write_expert(
        folder, expert, traj, buffer_id=store.buffer_id, seed=store.expert_seed(expert),
        history=old,
    )  # fmt: skip
    meta = json.loads((folder / META_FILE).read_text())
    meta.pop("experts")
    (folder / META_FILE).write_text(json.dumps(meta))
    return old


def test_old_format_history_still_loads_and_is_summed_up_on_resume(tmp_path) -> None:
    ds, out = toy(), tmp_path / "buf"
    old = _as_old_format(out, generate_buffer(ds, cfg(1), out, device="cpu", progress=False), 0)
    store = TrajectoryStore(out)
    assert store.history(0) == old and "experts" not in store.meta
    assert store.summary(0)["held_out"] == OLD_HELD_OUT
    store = generate_buffer(ds, cfg(2), out, device="cpu", progress=False)  # extend the buffer
    first, second = read_meta(out)["experts"]
    assert first == {
        "index": 0,
        "seed": store.expert_seed(0),
        "held_out": OLD_HELD_OUT,
        "final_train_acc": old["train_acc"][-1],
        "final_val_acc": None,
        "final_test_acc": 0.75,  # the last per-epoch test_acc was the final network's
        "val_acc": None,
    }
    assert second["index"] == 1 and second["held_out"] == "val"


@pytest.mark.parametrize(
    ("change", "part"),
    [
        (lambda m: m.update(experts={"index": 0}), "experts = "),
        (lambda m: m["experts"][0].pop("final_test_acc"), "lacks 'experts[0].final_test_acc'"),
        (lambda m: m["experts"][0].update(final_val_acc=1.5), "experts[0].final_val_acc = 1.5"),
        (lambda m: m["experts"][0].update(val_acc=["x"]), "experts[0].val_acc"),
        (lambda m: m["experts"][0].update(seed="7"), "experts[0].seed"),
        (lambda m: m["experts"].append(dict(m["experts"][0])), "lists expert 0 twice"),
    ],
)
def test_validate_buffer_meta_checks_the_experts_summary(tmp_path, change, part) -> None:
    meta = {
        "format": "meddistill-expert-buffer", "format_version": 1, "buffer_id": "b", "epochs": 1,
        "num_params": 3, "dtype": "float32", "model": {"name": "convnet"},
        "dataset": {"name": "toy", "source_id": "s", "image_shape": [1, 8, 8],
                    "normalization": {"mean": [0.0], "std": [1.0]}},
        "param_layout": {"names": ["w"], "shapes": [[3]]},
        "experts": [{"index": 0, "seed": 7, "held_out": "val", "final_train_acc": 0.5,
                     "final_val_acc": 0.5, "final_test_acc": None, "val_acc": [0.1, None]}],
    }  # fmt: skip
    validate_buffer_meta(meta, tmp_path / META_FILE)
    change(meta)
    with pytest.raises(ExpertBufferError, match="meddistill buffer") as info:
        validate_buffer_meta(meta, tmp_path / META_FILE)
    assert part in str(info.value) and str(tmp_path / META_FILE) in str(info.value)
