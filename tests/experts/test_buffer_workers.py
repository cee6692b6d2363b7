"""Experts trained in worker processes: bit-identical files, same buffer, resumable.

Each worker runs the same one-thread computation as the one-by-one run at one thread, so the
expert files (trajectory, seed, history) and buffer.json agree exactly, whatever the order the
experts finish in; `workers` schedules only and never changes the buffer's id or folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from bufferdata import make_tiny_dataset
from safetensors import safe_open

from meddistill.app.buffer import buffer_folder, dataset_identity
from meddistill.app.config import DatasetConfig
from meddistill.config import from_dict, to_dict
from meddistill.errors import NumericalError, OptionError
from meddistill.experts import BufferConfig, generate_buffer
from meddistill.experts import generate as generate_mod
from meddistill.experts.config import expert_train_config
from meddistill.models import ModelSpec
from meddistill.training import parallel
from meddistill.utils import stable_hash

SPEC = ModelSpec(name="convnet", depth=1, width=4)
PARALLEL_LOG = "meddistill.training.parallel"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def buffer_cfg(**kw) -> BufferConfig:
    train = dataclasses.replace(expert_train_config(), batch_size=8)
    base = dict(num_experts=3, epochs=2, model=SPEC, train=train, seed=5, workers=1)
    base.update(kw)
    return BufferConfig(**base)


def generate(out: Path, **kw):
    return generate_buffer(make_tiny_dataset(), buffer_cfg(**kw), out, device="cpu", progress=False)


def expert_files(folder: Path) -> dict[str, tuple[torch.Tensor, dict[str, str]]]:
    """Every expert file's tensors and metadata, by file name."""
    out = {}
    for path in sorted(folder.glob("expert_*.safetensors")):
        with safe_open(str(path), "pt") as f:
            names = list(f.keys())  # a safetensors file is not iterable
            out[path.name] = ({k: f.get_tensor(k) for k in names}, f.metadata())
    return out


def same_files(a: Path, b: Path, names: list[str] | None = None) -> None:
    """The experts of b (or `names`) are bit-identical to those of a."""
    left, right = expert_files(a), expert_files(b)
    for name in names if names is not None else list(right):
        (ta, ma), (tb, mb) = left[name], right[name]
        assert ma == mb and ta.keys() == tb.keys()
        assert all(torch.equal(ta[k], tb[k]) and ta[k].dtype == tb[k].dtype for k in ta)


def meta(folder: Path) -> dict:
    data = json.loads((folder / "buffer.json").read_text())
    data.pop("created")
    return data


@pytest.fixture(scope="module")
def one_by_one(tmp_path_factory) -> Path:
    """The reference: every expert in this process, one after the other, at one thread."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("seq") / "buf"
    generate(out)
    return out


def _not_in_this_process(*args, **kwargs):
    pytest.fail("an expert trained in the parent, not in a worker")


def test_workers_give_bit_identical_experts_and_buffer(one_by_one, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(generate_mod, "train_expert", _not_in_this_process)  # workers only
    with caplog.at_level(logging.WARNING, logger=PARALLEL_LOG):
        store = generate(tmp_path / "buf", workers=2)
    assert not caplog.records  # the workers did run (no fallback)
    assert store.expert_ids == [0, 1, 2]
    assert sorted(expert_files(tmp_path / "buf")) == sorted(expert_files(one_by_one))
    same_files(one_by_one, tmp_path / "buf")
    assert meta(tmp_path / "buf") == meta(one_by_one)
    assert "workers" not in meta(one_by_one)


def test_workers_change_neither_buffer_id_nor_folder(tmp_path) -> None:
    ds = make_tiny_dataset()
    source = DatasetConfig(name="tiny")
    cfgs = [buffer_cfg(workers=w) for w in (1, 3, "auto")]
    ids = {stable_hash(generate_mod.buffer_identity(ds, c)) for c in cfgs}
    folders = {buffer_folder(tmp_path, source, ds, c) for c in cfgs}
    assert len(ids) == 1 and len(folders) == 1
    # the folder name is the hash it had before `workers`, `compile` and `dp` existed (the
    # config without them; dp is left out while unset)
    later = ("workers", "compile", "dp")
    before = {k: v for k, v in to_dict(cfgs[0]).items() if k not in later}
    key = stable_hash({**dataset_identity(source, ds), "buffer": before}, 8)
    assert folders == {tmp_path / "buffers" / f"tiny-{key}"}
    assert cfgs[0].identity() == before


def test_workers_option_is_checked() -> None:
    assert from_dict(BufferConfig, {"workers": 2}).workers == 2
    assert BufferConfig().workers == "auto"
    for bad in (0, -1, "many", 1.5):
        with pytest.raises(OptionError, match="buffer.workers"):
            BufferConfig(workers=bad)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert BufferConfig(workers=4).workers_for(3, cpu) == 3
    assert BufferConfig(workers=4).workers_for(3, cuda) == 1
    assert BufferConfig().workers_for(1, cpu) == 1
    assert BufferConfig().workers_for(5, cpu) == min(5, parallel.available_cores())


def test_auto_keeps_tiny_experts_in_process(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(parallel, "_make_pool", pytest.fail)  # never reached
    store = generate(tmp_path / "buf", workers="auto", num_experts=2)
    assert store.expert_ids == [0, 1]


def _fail_third(payload, index: int):
    """Run in a worker (imported there by name): expert 2 fails with a one-line error."""
    if index == 2:
        raise NumericalError("expert 2: the loss became NaN or inf at epoch 1")
    return generate_mod._train_in_worker(payload, index)


def test_worker_error_is_one_error_and_finished_experts_stay(one_by_one, tmp_path, monkeypatch):
    out = tmp_path / "buf"
    monkeypatch.setattr(generate_mod, "_train_in_worker", _fail_third)
    with pytest.raises(NumericalError) as info:
        generate(out, workers=2)
    assert type(info.value) is NumericalError and "\n" not in str(info.value)
    # expert 2 starts only after expert 0 or 1 finished, so at least that one was written
    kept = sorted(expert_files(out))
    assert 1 <= len(kept) <= 2 and "expert_0002.safetensors" not in kept
    same_files(one_by_one, out, kept)
    assert len(json.loads((out / "buffer.json").read_text())["experts"]) == len(kept)
    monkeypatch.undo()
    torch.set_num_threads(1)
    generate(out, workers=2)  # resume: trains only the missing experts
    same_files(one_by_one, out)
    assert meta(out) == meta(one_by_one)


def test_processes_that_cannot_start_fall_back_in_process(
    one_by_one, tmp_path, monkeypatch, caplog
):
    def refuse(workers: int, payload: object) -> None:
        raise OSError("no processes allowed here")

    monkeypatch.setattr(parallel, "_make_pool", refuse)
    with caplog.at_level(logging.WARNING, logger=PARALLEL_LOG):
        generate(tmp_path / "buf", workers=2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no processes allowed here" in lines[0] and "\n" not in lines[0]
    assert "expert worker processes failed" in lines[0]
    assert "remaining 3 expert(s) in this process" in lines[0]
    same_files(one_by_one, tmp_path / "buf")
    assert meta(tmp_path / "buf") == meta(one_by_one)
