"""The Python API (the README snippet) on tiny data, and its agreement with the CLI; the DSA
strategy decided once per run and recorded (buffer, set), refused when a buffer disagrees."""

from pathlib import Path

import numpy as np
import pytest
import torch
from imagefolders import image_folder
from safetensors.torch import load_file

import meddistill as md
from meddistill.cli import main
from meddistill.data.registry import FULL_DSA, NO_FLIP_DSA
from meddistill.data.synthetic import SyntheticSet
from meddistill.experts.store import expert_filename
from meddistill.models import ModelSpec


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDDISTILL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def test_readme_snippet_runs_and_the_cli_makes_the_same_set(tmp_path, capsys):
    folder = image_folder(tmp_path / "ds", {"benign": 10, "malignant": 10}, size=16)
    # The README's snippet, as written (buffer kept in a folder to hand it to the CLI too)
    ds = md.load_dataset(f"folder:{folder}")
    exp = md.train_experts(ds, method="mtt", experts=1, epochs=6, out=tmp_path / "buf")
    syn = md.distill(ds, "hoptm", ipc=1, experts=exp, iterations=2)
    report = md.evaluate(syn, ds, num_nets=1, epochs=2)
    print(report.summary())
    summary = capsys.readouterr().out
    assert "convnet: test acc" in summary and "; val acc" in summary  # val: to choose by
    assert syn.images.shape == (2, 3, 16, 16) and syn.meta["dsa_strategy"] == FULL_DSA
    assert not list(tmp_path.glob("runs"))  # the API writes nothing unless asked
    args = ["distill", "--method", "hoptm", "--dataset", f"folder:{folder}", "--ipc", "1",
            "--iterations", "2", "--buffer", str(tmp_path / "buf"), "--out", "cli",
            "final_eval=false", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    cli = SyntheticSet.load(tmp_path / "cli" / "synthetic")
    assert torch.equal(cli.images, syn.images) and torch.equal(cli.labels, syn.labels)
    assert cli.syn_lr == syn.syn_lr


def pneumonia_npz(folder: Path) -> None:
    """A pneumoniamnist.npz of the official layout with generated pixels (md5 not checked)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "pneumoniamnist.npz", **arrays)


def test_buffer_and_distill_make_the_same_no_flip_buffer_for_chest_xrays(tmp_path):
    pneumonia_npz(tmp_path / "data")
    common = ["--data-root", str(tmp_path / "data"), "--no-progress", "dataset.verify_md5=false"]
    net = {"name": "convnet", "depth": 1, "width": 4}
    assert main(["buffer", "--dataset", "pneumoniamnist", "--experts", "1", "--epochs", "2",
                 "--out", "made-by-buffer", *common, f"buffer.model={net}"]) == 0  # fmt: skip
    assert main(["distill", "--method", "mtt", "--dataset", "pneumoniamnist", "--ipc", "1",
                 "--iterations", "1", "--out", "run", *common, f"model={net}",
                 "experts.num_experts=1", "experts.epochs=2", "final_eval=false",
                 "match.expert_epochs=1", "match.max_start=1", "match.syn_steps=2"]) == 0  # fmt: skip
    (made_by_distill,) = (tmp_path / "runs" / "buffers").iterdir()
    by_buffer = md.TrajectoryStore(tmp_path / "made-by-buffer")
    by_distill = md.TrajectoryStore(made_by_distill)
    assert by_buffer.buffer_id == by_distill.buffer_id
    assert by_buffer.meta["train"]["dsa_strategy"] == NO_FLIP_DSA
    a = load_file(str(by_buffer.path / expert_filename(0)))
    b = load_file(str(by_distill.path / expert_filename(0)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    syn = SyntheticSet.load(tmp_path / "run" / "synthetic")
    assert syn.meta["dsa_strategy"] == NO_FLIP_DSA


def test_the_configured_dsa_strategy_is_what_the_engine_uses(tmp_path):
    folder = image_folder(tmp_path / "ds", {"a": 6, "b": 6}, size=8)
    ds = md.load_dataset(f"folder:{folder}")
    tiny = ModelSpec(depth=1, width=4)
    exp = md.train_experts(ds, experts=1, epochs=3, model=tiny, progress=False)
    kw = dict(ipc=1, experts=exp, iterations=2, model=tiny, progress=False, syn_steps=3,
              expert_epochs=1, max_start=2, lr_img=10.0, step_size_param="log")  # fmt: skip
    default = md.distill(ds, "mtt", **kw)
    crop_only = md.distill(ds, "mtt", dsa_strategy="crop", **kw)
    assert default.meta["dsa_strategy"] == FULL_DSA and crop_only.meta["dsa_strategy"] == "crop"
    assert not torch.equal(default.images, crop_only.images)
    # through the CLI, a buffer made with another strategy is refused before any work
    code = main(["distill", "--method", "mtt", "--dataset", f"folder:{folder}", "--ipc", "1",
                 "--buffer", str(exp.path), "--out", "x", "model.depth=1", "model.width=4",
                 "match.dsa_strategy=crop", "match.expert_epochs=1", "match.max_start=2"])  # fmt: skip
    assert code == 2 and not (tmp_path / "x").exists()
    # allowed explicitly, it runs and says so in the run's log
    code = main(["distill", "--method", "mtt", "--dataset", f"folder:{folder}", "--ipc", "1",
                 "--iterations", "1", "--buffer", str(exp.path), "--out", "y", "model.depth=1",
                 "model.width=4", "match.dsa_strategy=crop", "match.expert_epochs=1",
                 "match.max_start=2", "match.syn_steps=2", "match.step_size_param=log",
                 "final_eval=false", "allow_dsa_mismatch=true", "--no-progress"])  # fmt: skip
    assert code == 0
    assert "used anyway (allow_dsa_mismatch=true)" in (tmp_path / "y" / "log.txt").read_text()
