"""Issue 9, point 6: artifacts read from disk are checked, not trusted.

A real tiny expert buffer and a real tiny distilled set are made once per module; each case
copies one, damages it the way a hand edit, another tool or a half-broken disk would, and runs
the command that reads it (`evaluate --synthetic`, `export`, `distill --buffer`): the command
must end with one line naming the file and the defect, and no traceback. The validation
functions (validate_synthetic, validate_buffer_meta, validate_snapshot) are also tested directly.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from faulthelpers import hostile
from imagefolders import image_folder
from safetensors.torch import load_file, save_file

from meddistill.cli import main
from meddistill.data.dataset import Normalization
from meddistill.data.snapshots import load_snapshots, save_snapshot, validate_snapshot
from meddistill.data.synthetic import META, TENSORS, SyntheticSet, validate_synthetic
from meddistill.errors import ArtifactError, ExpertBufferError
from meddistill.experts.store import META_FILE, TrajectoryStore, validate_buffer_meta

DISTILL_TINY = [
    "model.width=4",
    "--ipc",
    "1",
    "--iterations",
    "2",
    "match.syn_steps=2",
    "match.expert_epochs=1",
    "match.max_start=1",
    "final_eval=false",
    "--no-progress",
]
EXPERT = "expert_000.safetensors"


class Made:
    """The module's good artifacts: a dataset folder, a buffer and a distilled set."""

    def __init__(self, ds: Path, buf: Path, syn: Path) -> None:
        self.ds, self.buf, self.syn = ds, buf, syn


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    """1 expert x 2 epochs of a width-4 ConvNet on 3 classes of 8x8 images, and a 2-iteration
    distillation from it (IPC 1: 3 images)."""
    base = tmp_path_factory.mktemp("artifacts")
    ds = image_folder(base / "ds", {"a": 6, "b": 6, "c": 6})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDDISTILL_CACHE", str(base / "cache"))
        mp.delenv("MEDDISTILL_DATA", raising=False)
        argv = ["buffer", "--dataset", f"folder:{ds}", "--out", str(base / "buf")]
        assert (
            main(
                [*argv, "--experts", "1", "--epochs", "2", "buffer.model.width=4", "--no-progress"]
            )
            == 0
        )
        argv = ["distill", "--dataset", f"folder:{ds}", "--buffer", str(base / "buf")]
        assert main([*argv, "--out", str(base / "run"), *DISTILL_TINY]) == 0
    return Made(ds, base / "buf", base / "run" / "synthetic")


# Helpers -------------------------------------------------------------------------------------


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_json(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Apply `change` to the parsed file; a non-None return value replaces the whole document."""
    doc = json.loads(path.read_text())
    new = change(doc)
    path.write_text(json.dumps(doc if new is None else new))


def edit_tensors(path: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Rewrite a safetensors file with `change` applied, keeping its header metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        header = fh.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=header)


def one_hot(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.nn.functional.one_hot(t["labels"], 3).float()


# Synthetic sets: (case, file edited, change, parts of the message) ----------------------------


def _set(key: str, value: Any) -> Callable[[dict], None]:
    return lambda d: d.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict], None]:
    def drop(d: dict) -> None:
        d.pop(key)

    return drop


def _images_nan(t: dict[str, torch.Tensor]) -> None:
    t["images"][0, 0, 0, 0] = float("nan")


def _soft_nan(t: dict[str, torch.Tensor]) -> None:
    t["labels"] = one_hot(t)
    t["labels"][1, 2] = float("nan")


SYNTHETIC_CASES = [
    ("no-normalization", META, _drop("normalization"), ["lacks 'normalization'"]),
    ("no-class-names", META, _drop("class_names"), ["lacks 'class_names'"]),
    ("meta-a-list", META, lambda d: [1, 2], ["not a JSON object"]),
    ("std-zero", META, _set("normalization", {"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}),
     ["every std must be > 0"]),
    ("std-text", META, _set("normalization", {"mean": [0.5] * 3, "std": "wide"}),
     ["normalization.std", "finite numbers"]),
    ("norm-one-channel", META, _set("normalization", {"mean": [0.5], "std": [0.2]}),
     ["meta.json has a normalization of 1 channel(s)", "synthetic.safetensors have 3"]),
    ("names-for-4-classes", META, _set("class_names", ["a", "b", "c", "d"]),
     ["synthetic.safetensors has no image of class(es) 3 of the 4 classes meta.json names"]),
    ("names-for-2-classes", META, _set("class_names", ["a", "b"]),
     ["synthetic.safetensors holds class indices 0..2, outside 0..1"]),
    ("meta-syn-lr-text", META, _set("syn_lr", "fast"), ["syn_lr", "finite number > 0"]),
    ("meta-count-wrong", META, _set("num_images", 30), ["records num_images = 30", "holds 3"]),
    ("images-fp16", TENSORS, lambda t: t.update(images=t["images"].half()),
     ["stores images as float16, expected float32"]),
    ("images-rank-3", TENSORS, lambda t: t.update(images=t["images"][:, 0]),
     ["images of shape [3, 8, 8]"]),
    ("images-nan", TENSORS, _images_nan, ["1 non-finite image value(s)"]),
    ("no-images", TENSORS, _drop("images"), ["lacks the tensor 'images'"]),
    ("labels-negative", TENSORS, lambda t: t.update(labels=t["labels"] - 1),
     ["class indices -1..1"]),
    ("labels-float", TENSORS, lambda t: t.update(labels=t["labels"].float()),
     ["stores hard labels as float32, expected int64"]),
    ("labels-int32", TENSORS, lambda t: t.update(labels=t["labels"].int()),
     ["stores hard labels as int32"]),
    ("labels-too-few", TENSORS, lambda t: t.update(labels=t["labels"][:2]),
     ["holds 3 images but 2 labels"]),
    ("labels-rank-3", TENSORS, lambda t: t.update(labels=t["labels"].view(3, 1, 1)),
     ["labels of shape [3, 1, 1]"]),
    ("soft-2-of-3-names", TENSORS, lambda t: t.update(labels=one_hot(t)[:, :2].contiguous()),
     ["soft labels over 2 classes but meta.json names 3"]),
    ("soft-nan", TENSORS, _soft_nan, ["non-finite soft labels"]),
    ("soft-not-probabilities", TENSORS, lambda t: t.update(labels=one_hot(t) * 3),
     ["not probabilities"]),
    ("soft-fp16", TENSORS, lambda t: t.update(labels=one_hot(t).half()),
     ["stores soft labels as float16"]),
    ("syn-lr-vector", TENSORS, lambda t: t.update(syn_lr=torch.tensor([0.01, 0.02])),
     ["syn_lr as a float32 tensor of shape [2]", "one float number"]),
    ("syn-lr-negative", TENSORS, lambda t: t.update(syn_lr=torch.tensor(-0.01)),
     ["syn_lr = -0.01", "finite step size > 0"]),
    ("syn-lr-nan", TENSORS, lambda t: t.update(syn_lr=torch.tensor(float("nan"))),
     ["syn_lr = nan"]),
    ("syn-lr-int", TENSORS, lambda t: t.update(syn_lr=torch.tensor(1)), ["syn_lr as a int64"]),
]  # fmt: skip


def damaged_set(made: Made, workdir: Path, file: str, change: Callable) -> Path:
    syn = copy_of(made.syn, workdir / "syn")
    if file == META:
        edit_json(syn / META, change)
    else:
        edit_tensors(syn / TENSORS, change)
    return syn


@pytest.mark.parametrize("command", ["evaluate", "export"])
@pytest.mark.parametrize(
    ("file", "change", "parts"),
    [pytest.param(*case[1:], id=case[0]) for case in SYNTHETIC_CASES],
)
def test_damaged_synthetic_set_is_refused(capsys, workdir, made, command, file, change, parts):
    syn = damaged_set(made, workdir, file, change)
    if command == "evaluate":
        argv = ["evaluate", "--dataset", f"folder:{made.ds}", "--synthetic", str(syn)]
        argv.append("--no-progress")
    else:
        argv = ["export", str(syn), "--out", str(workdir / "out" / "set.npz")]
    msg = hostile(capsys, workdir, argv,
                  contains=(f"synthetic set file {syn}{os.sep}", *parts, "meddistill distill"))  # fmt: skip
    assert not (workdir / "out").exists()
    assert "\n" not in msg


def test_unreadable_tensor_file_is_refused(capsys, workdir, made):
    syn = copy_of(made.syn, workdir / "syn")
    data = (syn / TENSORS).read_bytes()
    (syn / TENSORS).write_bytes(data[: len(data) // 2])
    hostile(capsys, workdir, ["export", str(syn), "--out", str(workdir / "x.npz")],
            contains=(f"synthetic set at {syn} is unreadable", "meddistill distill"))  # fmt: skip


def test_good_set_exports_and_soft_labels_are_accepted(capsys, workdir, made):
    """The checks refuse damage, not the sets the package writes (hard or soft labels)."""
    syn = copy_of(made.syn, workdir / "syn")
    assert main(["export", str(syn), "--out", str(workdir / "hard.npz")]) == 0
    edit_tensors(syn / TENSORS, lambda t: t.update(labels=torch.softmax(one_hot(t) * 4, dim=1)))
    edit_json(syn / META, _set("soft_labels", True))
    assert main(["export", str(syn), "--out", str(workdir / "soft.npz")]) == 0
    with np.load(workdir / "soft.npz") as npz:
        assert npz["train_labels"].ravel().tolist() == [0, 1, 2]
        assert npz["train_images"].shape == (3, 8, 8, 3)


def test_set_of_another_class_count_is_refused_by_evaluate(capsys, workdir, made):
    """A consistent set of 4 classes, evaluated against the 3-class dataset it claims."""
    syn = copy_of(made.syn, workdir / "syn")
    edit_json(syn / META, lambda d: d.update(class_names=list("abcd"), soft_labels=True))
    four = lambda t: torch.nn.functional.one_hot(t["labels"], 4).float()  # noqa: E731
    edit_tensors(syn / TENSORS, lambda t: t.update(labels=four(t)))
    argv = ["evaluate", "--dataset", f"folder:{made.ds}", "--synthetic", str(syn)]
    hostile(capsys, workdir, [*argv, "--no-progress"], contains=("names 4 classes", "has 3"))


# Expert buffers ------------------------------------------------------------------------------


def _layout_short(d: dict) -> None:
    d["param_layout"]["names"] = d["param_layout"]["names"][:-1]


BUFFER_META_CASES = [
    ("dtype-bfloat16", _set("dtype", "bfloat16"), ["dtype = \"bfloat16\"", "float32, float16"]),
    ("epochs-text", _set("epochs", "three"), ["epochs = \"three\"", "an integer >= 1"]),
    ("epochs-bool", _set("epochs", True), ["epochs = true"]),
    ("epochs-zero", _set("epochs", 0), ["epochs = 0"]),
    ("no-num-params", _drop("num_params"), ["lacks 'num_params'"]),
    ("num-params-float", _set("num_params", 12.5), ["num_params = 12.5"]),
    ("no-buffer-id", _drop("buffer_id"), ["lacks 'buffer_id'"]),
    ("dataset-a-name", _set("dataset", "bloodmnist"), ["dataset = \"bloodmnist\""]),
    ("image-shape-int", lambda d: d["dataset"].__setitem__("image_shape", 8),
     ["dataset.image_shape = 8"]),
    ("no-model", _drop("model"), ["lacks 'model'"]),
    ("train-a-list", _set("train", [1]), ["train = [1]"]),
    ("dsa-text", lambda d: d["train"].__setitem__("dsa", "yes"), ["train.dsa = \"yes\""]),
    ("layout-short", _layout_short, ["parameter names but", "shapes in param_layout"]),
    ("num-experts-text", _set("num_experts", "one"), ["num_experts = \"one\""]),
    ("not-a-buffer", lambda d: ["x"], ["is not a meddistill expert-buffer description"]),
    ("version-2", _set("format_version", 2), ["format version 2"]),
]  # fmt: skip


def distill_argv(made: Made, buf: Path) -> list[str]:
    argv = ["distill", "--dataset", f"folder:{made.ds}", "--buffer", str(buf), "--out", "out"]
    return [*argv, *DISTILL_TINY]


@pytest.mark.parametrize(
    ("change", "parts"), [pytest.param(*case[1:], id=case[0]) for case in BUFFER_META_CASES]
)
def test_damaged_buffer_json_is_refused(capsys, workdir, made, change, parts):
    buf = copy_of(made.buf, workdir / "buf")
    edit_json(buf / META_FILE, change)
    msg = hostile(capsys, workdir, distill_argv(made, buf), contains=(str(buf / META_FILE), *parts))
    assert "meddistill buffer" in msg
    assert not (workdir / "out").exists()


def _fp16_overflow(t: dict[str, torch.Tensor]) -> None:
    traj = t["trajectory"].clone()
    traj[:, 0] = 1e5  # beyond float16's 65504: inf
    t["trajectory"] = traj.half()


def _nan_rows(t: dict[str, torch.Tensor]) -> None:
    t["trajectory"][:, 3] = float("nan")


@pytest.mark.parametrize(
    ("dtype", "change", "parts"),
    [
        pytest.param("float32", _nan_rows, ["1 non-finite parameter value(s)"], id="nan-f32"),
        pytest.param(
            "float16",
            _fp16_overflow,
            ["non-finite", "buffer.dtype=float32 avoids float16 overflow"],
            id="inf-f16",
        ),
    ],
)
def test_non_finite_expert_parameters_are_named(capsys, workdir, made, dtype, change, parts):
    """Found when the row is read (a buffer is never read whole), so the run folder may exist;
    the message blames the buffer, not the learning rates."""
    buf = copy_of(made.buf, workdir / "buf")
    edit_json(buf / META_FILE, _set("dtype", dtype))
    edit_tensors(buf / EXPERT, change)
    msg = hostile(capsys, workdir, distill_argv(made, buf), allowed=("out", "runs"),
                  contains=(f"expert file {buf / EXPERT}", *parts, "meddistill buffer"))  # fmt: skip
    assert "lr_img" not in msg


EXPERT_FILE_CASES = [
    ("fp16-file-float32-meta", lambda t: t.update(trajectory=t["trajectory"].half()),
     ["holds a F16 trajectory", "expected F32 [3, "]),
    ("one-row-short", lambda t: t.update(trajectory=t["trajectory"][:2].contiguous()),
     ["of shape [2, "]),
    ("renamed-tensor", lambda t: t.update(weights=t.pop("trajectory")), ["is corrupt or unreadable"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "parts"), [pytest.param(*case[1:], id=case[0]) for case in EXPERT_FILE_CASES]
)
def test_damaged_expert_file_is_refused(capsys, workdir, made, change, parts):
    buf = copy_of(made.buf, workdir / "buf")
    edit_tensors(buf / EXPERT, change)
    hostile(capsys, workdir, distill_argv(made, buf),
            contains=(f"expert file {buf / EXPERT}", *parts, "meddistill buffer"))  # fmt: skip
    assert not (workdir / "out").exists()


def test_damaged_expert_header_is_refused(capsys, workdir, made):
    buf = copy_of(made.buf, workdir / "buf")
    tensors = load_file(str(buf / EXPERT))
    from safetensors import safe_open

    with safe_open(str(buf / EXPERT), framework="pt") as fh:
        header = {**fh.metadata(), "seed": "x", "history": "[1, 2"}
    save_file(tensors, str(buf / EXPERT), metadata=header)
    hostile(capsys, workdir, distill_argv(made, buf),
            contains=(f"expert file {buf / EXPERT} has a damaged header", 'seed "x"'))  # fmt: skip


# The validation functions, directly ----------------------------------------------------------


def good_set() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {
        "images": torch.zeros(4, 1, 4, 4),
        "labels": torch.tensor([0, 0, 1, 1]),
        "syn_lr": torch.tensor(0.01),
    }
    meta = {
        "dataset": "toy",
        "source_id": "toy-src",
        "class_names": ["a", "b"],
        "normalization": {"mean": [0.5], "std": [0.25]},
        "num_images": 4,
        "image_shape": [1, 4, 4],
        "soft_labels": False,
        "syn_lr": 0.01,
    }
    return tensors, meta


def test_validate_synthetic_accepts_what_save_writes(tmp_path):
    tensors, meta = good_set()
    validate_synthetic(tensors, meta, tmp_path)
    syn = SyntheticSet(
        tensors["images"], torch.tensor([[0.9, 0.1], [0.2, 0.8]] * 2), Normalization((0.5,), (0.25,)),
        ["a", "b"], "toy", "toy-src", syn_lr=0.01,
    )  # fmt: skip
    syn.save(tmp_path / "soft")
    loaded = SyntheticSet.load(tmp_path / "soft")
    assert loaded.labels.shape == (4, 2) and loaded.syn_lr == pytest.approx(0.01)
    del tensors["syn_lr"]
    meta["syn_lr"] = None
    validate_synthetic(tensors, meta, tmp_path)  # a set without a learned step size


@pytest.mark.parametrize(
    ("edit", "part"),
    [
        (lambda t, m: m.update(dataset=""), f'{META} has dataset = ""'),
        (lambda t, m: m.update(class_names=["a", 2]), "class_names"),
        (lambda t, m: m["normalization"].update(mean=[float("nan")]), "normalization.mean"),
        (lambda t, m: m["normalization"].update(std=[0.1, 0.2]), "1 normalization mean(s) but 2"),
        (lambda t, m: m.update(syn_lr=True), "syn_lr = true"),
        (lambda t, m: m.update(soft_labels=True), "records soft_labels = true"),
        (lambda t, m: m.update(image_shape=[1, 8, 8]), "records image_shape = [1, 8, 8]"),
        (lambda t, m: t.update(images=torch.zeros(0, 1, 4, 4)), "no empty dimension"),
        (lambda t, m: t.update(images=torch.full((4, 1, 4, 4), float("inf"))), "64 non-finite"),
        (lambda t, m: t.pop("labels"), "lacks the tensor 'labels'"),
        (lambda t, m: t.update(syn_lr=torch.tensor([[0.1]])), "shape [1, 1]"),
    ],
)
def test_validate_synthetic_refuses(tmp_path, edit, part):
    tensors, meta = good_set()
    edit(tensors, meta)
    with pytest.raises(ArtifactError, match="re-create the set") as info:
        validate_synthetic(tensors, meta, tmp_path)
    assert part in str(info.value) and str(tmp_path) in str(info.value)
    assert "\n" not in str(info.value)


def test_to_uint8_refuses_nan_images_instead_of_black_pixels(tmp_path):
    syn = SyntheticSet(
        torch.full((2, 1, 4, 4), float("nan")), torch.tensor([0, 1]),
        Normalization((0.5,), (0.25,)), ["a", "b"], "toy", "toy-src",
    )  # fmt: skip
    with pytest.raises(ArtifactError, match="32 non-finite image value"):
        syn.export_npz(tmp_path / "sub" / "x.npz")
    assert not (tmp_path / "sub").exists()


def test_validate_buffer_meta_directly(made, tmp_path):
    meta = json.loads((made.buf / META_FILE).read_text())
    validate_buffer_meta(meta, made.buf / META_FILE)
    assert TrajectoryStore(made.buf).num_experts == 1
    bad_values = (("seed", "0"), ("num_params", -1), ("train", {"dsa_strategy": 3}))
    for key, value in (*bad_values, ("num_experts", None)):
        bad = json.loads(json.dumps(meta))
        bad[key] = value
        with pytest.raises(ExpertBufferError, match="meddistill buffer") as info:
            validate_buffer_meta(bad, tmp_path / META_FILE)
        assert str(tmp_path / META_FILE) in str(info.value)
    meta["train"]["dsa_strategy"] = None  # optional fields may be null
    validate_buffer_meta(meta, tmp_path / META_FILE)


def test_validate_snapshot_and_load_snapshots(tmp_path):
    images, labels = torch.zeros(4, 1, 4, 4), torch.tensor([0, 0, 1, 1])
    assert validate_snapshot({"images": images, "labels": labels}, "12", tmp_path / "s") == 12
    cases = [
        ({"images": images.half(), "labels": labels}, "12", "float16 images"),
        ({"images": images, "labels": labels.float()}, "12", "float32 labels"),
        ({"images": images, "labels": labels[:3]}, "12", "expected int64 [4]"),
        ({"images": images, "labels": labels - 1}, "12", "negative class indices"),
        ({"images": images * float("nan"), "labels": labels}, "12", "non-finite"),
        ({"images": images, "labels": labels}, "-1", "expected an integer >= 0"),
        ({"images": images}, "12", "lacks 'images' or 'labels'"),
    ]
    for tensors, iteration, part in cases:
        with pytest.raises(ArtifactError, match="delete it") as info:
            validate_snapshot(tensors, iteration, tmp_path / "s")
        assert part in str(info.value)
    save_snapshot(tmp_path, 0, images, labels)
    save_snapshot(tmp_path, 5, images[:2], labels[:2])
    with pytest.raises(ArtifactError, match=r"iter_0000005.safetensors holds images of shape"):
        load_snapshots(tmp_path)
    save_snapshot(tmp_path, 5, images + 1, labels)
    assert [it for it, _, _ in load_snapshots(tmp_path)] == [0, 5]
