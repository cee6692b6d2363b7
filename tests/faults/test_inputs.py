"""Issue 9, point 5: inputs accepted that must not be.

Every option of every config a command resolves is range-checked when the job is resolved,
before any data is loaded, any folder made or anything trained, and the one error line names
the dotted option the user typed (`match.eval.batch_size`, `experts.train.lr`), not an internal
name. Datasets that cannot be trained or evaluated on (an empty train or test split, training
images of a single class) are refused when they are built. No JSON file holds NaN: non-finite
numbers are written null (with a reason beside a results row's undefined AUC).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from faulthelpers import hostile
from imagefolders import image_folder

from meddistill.data.dataset import MedicalDataset, Normalization, Split
from meddistill.data.results import read_results, write_results
from meddistill.errors import ConfigError, DatasetCorruptError
from meddistill.runs import RunDir
from meddistill.utils import write_json_atomic

QUIET = ["--no-progress", "--device", "cpu"]
NORM = "dataset.normalization="


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny datasets outside every case's folder: two classes, one class, and MedMNIST-like
    npz files with an empty test split, an empty train split, and one class with train data."""
    root = tmp_path_factory.mktemp("data")
    image_folder(root / "two", {"a": 4, "b": 4})
    image_folder(root / "one", {"a": 6})
    _npz(root / "no_test", {"train": 8, "val": 8, "test": 0})
    _npz(root / "no_train", {"train": 0, "val": 8, "test": 8})
    _npz(root / "one_class", {"train": 8, "val": 8, "test": 8}, train_classes=1)
    return root


def _npz(folder: Path, sizes: dict[str, int], train_classes: int = 8) -> None:
    """A bloodmnist.npz (official keys, shapes, dtypes; generated pixels) with these splits."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in sizes.items():
        classes = train_classes if split == "train" else 8
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1).astype(np.uint8)
    folder.mkdir(parents=True)
    np.savez(folder / "bloodmnist.npz", **arrays)


def _two(data: Path) -> list[str]:
    return ["--dataset", f"folder:{data / 'two'}", *QUIET]


# Options of every command ----------------------------------------------------------------------
DISTILL = [
    # the examples
    ("dm", "match.log_every=0", "match.log_every"),
    ("mtt", "match.lr_img=0", "match.lr_img"),
    ("dm", "match.lr_img=-1", "match.lr_img"),
    ("mtt", "match.eval_every=-1", "match.eval_every"),
    ("dm", "match.eval_every=-1", "match.eval_every"),
    ("dm", "eval.batch_size=0", "eval.batch_size"),
    ("mtt", NORM + "{mean: [0.5, 0.5, 0.5], std: [0, 1, 1]}", "dataset.normalization"),
    ("mtt", NORM + "{mean: [0.5, 0.5, 0.5], std: [-1, 1, 1]}", "dataset.normalization"),
    ("mtt", NORM + "{mean: [.nan, 0.5, 0.5], std: [1, 1, 1]}", "dataset.normalization"),
    ("mtt", "dataset.normalization={mean: [0.5, 0.5, 0.5]}", "dataset.normalization"),
    ("mtt", "dataset.normalization={mean: [0.5], std: [1, 1]}", "dataset.normalization"),
    # the shared trajectory knobs
    ("mtt", "match.lr_img=.nan", "match.lr_img"),
    ("mtt", "match.lr_img=.inf", "match.lr_img"),
    ("mtt", "match.syn_lr_init=0", "match.syn_lr_init"),
    ("mtt", "match.lr_lr=-1e-5", "match.lr_lr"),
    ("mtt", "match.momentum_img=1", "match.momentum_img"),
    ("mtt", "match.momentum_lr=-0.1", "match.momentum_lr"),
    ("mtt", "match.iterations=-1", "match.iterations"),  # 0: the initial set, unmatched
    ("mtt", "match.syn_steps=0", "match.syn_steps"),
    ("mtt", "match.expert_epochs=0", "match.expert_epochs"),
    ("mtt", "match.min_start=-1", "match.min_start"),
    ("mtt", "match.max_start=0", "match.max_start"),
    ("mtt", "match.batch_syn=-1", "match.batch_syn"),
    ("mtt", "match.checkpoint_every=0", "match.checkpoint_every"),
    ("mtt", "match.snapshot_every=-1", "match.snapshot_every"),
    ("mtt", "match.dsa_strategy=blur", "match.dsa_strategy"),
    ("mtt", "match.eval.batch_size=0", "match.eval.batch_size"),
    ("mtt", "match.eval.num_nets=0", "match.eval.num_nets"),
    ("mtt", "match.eval.lr=-0.01", "match.eval.lr"),
    # each method's own knobs
    ("hoptm", "match.kappa_mu=0.5", "match.kappa_mu"),
    ("hoptm", "match.kappa_quantile=0", "match.kappa_quantile"),
    ("hoptm", "match.kappa_base=0", "match.kappa_base"),
    ("hoptm", "match.kappa_period=0", "match.kappa_period"),
    ("hoptm", "match.shape_lambda=-1", "match.shape_lambda"),
    ("ptm", "match.match_weight=0", "match.match_weight"),
    ("ptm", "match.overlap_weight=-1", "match.overlap_weight"),
    ("ptm", "match.overlap_sigma=-1", "match.overlap_sigma"),
    ("ptm", "match.progressive_steps_per_epoch=-1", "match.progressive_steps_per_epoch"),
    ("ptm", "match.progressive_end=-1", "match.progressive_end"),
    ("ptm", "match.retraining_points=-1", "match.retraining_points"),
    ("ftd", "match.ema_decay=1", "match.ema_decay"),
    ("att", "match.ema_decay=-0.5", "match.ema_decay"),
    ("datm", "match.lr_y=0", "match.lr_y"),
    ("datm", "match.momentum_y=1", "match.momentum_y"),
    ("datm", "match.growing_start=0", "match.growing_start"),
    ("datm", "match.growing_end=-1", "match.growing_end"),
    ("datm", "match.loss_skip_threshold=-1", "match.loss_skip_threshold"),
    ("tesla", "match.label_expert_epoch=-2", "match.label_expert_epoch"),
    ("tesla", "match.lr_y=-2", "match.lr_y"),
    ("smdd", "match.prune_ratio=1", "match.prune_ratio"),
    ("seqmatch", "match.seq_subsets=0", "match.seq_subsets"),
    ("haba", "match.haba_hallucinators=0", "match.haba_hallucinators"),
    ("haba", "match.lr_hallucinator=0", "match.lr_hallucinator"),
    ("dc", "match.lr_net=0", "match.lr_net"),
    ("dc", "match.batch_train=0", "match.batch_train"),
    ("dsa", "match.outer_loop=-1", "match.outer_loop"),
    ("dm", "match.batch_real=0", "match.batch_real"),
    ("dm", "match.syn_lr=0", "match.syn_lr"),
    ("dm", "match.lr_img_decay_at=[-1]", "match.lr_img_decay_at"),
    ("dm", "match.momentum_img=1.5", "match.momentum_img"),
    ("idm", "match.net_momentum=1", "match.net_momentum"),
    ("idm", "match.ce_weight=-1", "match.ce_weight"),
    ("idm", "match.queue_init=0", "match.queue_init"),
    ("idm", "match.net_weight_decay=-1", "match.net_weight_decay"),
    ("idm", "match.lr_net=.inf", "match.lr_net"),
    ("cafe", "match.embed_weight=-1", "match.embed_weight"),
    ("cafe", "match.layer_weights=[-1]", "match.layer_weights"),
    ("cafe", "match.discrimination_weight=-1", "match.discrimination_weight"),
    # the job's own sections
    ("dm", "eval.lr=-1", "eval.lr"),
    ("dm", "eval.epochs=0", "eval.epochs"),
    ("dm", "eval.num_nets=0", "eval.num_nets"),
    ("dm", "eval.momentum=1", "eval.momentum"),
    ("dm", "eval.weight_decay=-1", "eval.weight_decay"),
    ("dm", "eval.models=[nonet]", "eval.models"),
    ("dm", "eval.models=[]", "eval.models"),
    ("dm", "eval.dsa_strategy=blur", "eval.dsa_strategy"),
    ("dm", "model.width=0", "model.width"),
    ("dm", "model.depth=0", "model.depth"),
    ("mtt", "experts.num_experts=0", "experts.num_experts"),
    ("mtt", "experts.epochs=0", "experts.epochs"),
    ("mtt", "experts.seed=-1", "experts.seed"),
    ("mtt", "experts.model.width=0", "experts.model.width"),
    ("mtt", "experts.train={epochs: 2, lr: 0}", "experts.train.lr"),
    ("mtt", "experts.train={epochs: 2, lr: 0.01, batch_size: 0}", "experts.train.batch_size"),
    ("mtt", "experts.train={epochs: 2, lr: 0.01, gsam_rho: 0}", "experts.train.gsam_rho"),
    ("mtt", "expert_optimizer=adam", "expert_optimizer"),
    ("dm", "seed=-1", "seed"),
    ("dm", "dataset.size=0", "dataset.size"),
    ("dm", "dataset.resize_to=0", "dataset.resize_to"),
    ("dm", "dataset.channels=2", "dataset.channels"),
    ("dm", "dataset.split_seed=-1", "dataset.split_seed"),
    ("dm", "dataset.dsa_strategy=blur", "dataset.dsa_strategy"),
]


@pytest.mark.parametrize(("method", "override", "option"), DISTILL)
def test_distill_refuses_bad_options(capsys, workdir, data, method, override, option):
    argv = ["distill", "--method", method, *_two(data), "--ipc", "1", override]
    message = hostile(capsys, workdir, argv, contains=(f"option {option}",))
    assert "\n" not in message


@pytest.mark.parametrize(
    ("flag", "option"), [(["--ipc", "0"], "match.ipc"), (["--iterations", "0"], "match.iterations")]
)
def test_distill_flags_are_named_as_options(capsys, workdir, data, flag, option):
    hostile(capsys, workdir, ["distill", "--method", "dm", *_two(data), *flag], contains=(option,))


OTHERS = [
    ("baseline", ["--no-full", "--ipc", "0"], "option ipcs"),
    ("baseline", ["--no-full", "ipcs=[]"], "option ipcs"),
    ("baseline", ["full_nets=0"], "option full_nets"),
    ("baseline", ["subset_lr=0"], "option subset_lr"),
    ("baseline", ["full_train={epochs: 1, lr: 0.01, batch_size: 0}"], "full_train.batch_size"),
    ("baseline", ["full_train={epochs: 0, lr: 0.01}"], "option full_train.epochs"),
    ("baseline", ["full_train={epochs: 1, lr: 0.01, weight_decay: -1}"], "full_train.weight_decay"),
    ("baseline", ["eval.batch_size=0"], "option eval.batch_size"),
    ("baseline", ["--seed", "-1"], "option seed"),
    ("coreset", ["--ipc", "0"], "option ipc"),
    ("coreset", ["feature_epochs=0"], "option feature_epochs"),
    ("coreset", ["eval.batch_size=0"], "option eval.batch_size"),
    ("coreset", ["model.width=-3"], "option model.width"),
    ("evaluate", ["--ipc", "0"], "option ipc"),
    ("evaluate", ["--ipc", "1", "subset_lr=-1"], "option subset_lr"),
    ("evaluate", ["--ipc", "1", "eval.num_nets=0"], "option eval.num_nets"),
    ("evaluate", ["--ipc", "1", "eval.lr=.inf"], "option eval.lr"),
    ("buffer", ["--experts", "0"], "option buffer.num_experts"),
    ("buffer", ["--epochs", "0"], "option buffer.epochs"),
    ("buffer", ["buffer.train={epochs: 1, lr: -1}"], "option buffer.train.lr"),
    ("buffer", ["buffer.train={epochs: 1, lr: 0.01, momentum: 1}"], "option buffer.train.momentum"),
    ("buffer", ["buffer.model.width=0"], "option buffer.model.width"),
    ("buffer", ["buffer.model.name=nonet"], "unknown model 'nonet'"),
    ("buffer", ["--seed", "-1"], "option seed"),
    ("buffer", ["buffer.seed=-1"], "option buffer.seed"),
]


@pytest.mark.parametrize(("command", "args", "option"), OTHERS)
def test_other_commands_refuse_bad_options(capsys, workdir, data, command, args, option):
    hostile(capsys, workdir, [command, *_two(data), *args], contains=(option,))


# Datasets that cannot be trained or evaluated on ---------------------------------------------
def _npz_args(data: Path, folder: str) -> list[str]:
    root = ["--data-root", str(data / folder), "dataset.verify_md5=false"]
    return ["--dataset", "bloodmnist", *root, *QUIET]


RUN_ARGS = {
    "baseline": ["--no-full", "--ipc", "1"],
    "evaluate": ["--ipc", "1"],
    "distill": ["--method", "dm", "--ipc", "1"],
    "coreset": ["--selection", "random", "--ipc", "1"],
    "buffer": ["--experts", "1", "--epochs", "1"],
}


@pytest.mark.parametrize("command", sorted(RUN_ARGS))
@pytest.mark.parametrize(
    ("folder", "contains"),
    [
        ("no_test", ("dataset 'bloodmnist'", "empty test split")),
        ("no_train", ("dataset 'bloodmnist'", "empty train split")),
        ("one_class", ("dataset 'bloodmnist'", "1 class(es)", "at least 2")),
    ],
)
def test_unusable_datasets_are_refused_when_built(capsys, workdir, data, command, folder, contains):
    argv = [command, *_npz_args(data, folder), *RUN_ARGS[command]]
    hostile(capsys, workdir, argv, contains=contains)


@pytest.mark.parametrize("command", ["distill", "baseline"])
def test_a_folder_of_one_class_is_refused(capsys, workdir, data, command):
    argv = [command, "--dataset", f"folder:{data / 'one'}", *QUIET, *RUN_ARGS[command]]
    hostile(capsys, workdir, argv, contains=("1 class(es)", "'a'", "at least 2"))


def test_datasets_and_normalisations_built_in_python_are_checked():
    images, labels = torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1])
    norm = Normalization((0.5,), (0.25,))
    good = {"train": Split(images, labels), "test": Split(images, labels)}
    MedicalDataset("toy", good, ["a", "b"], norm, "id")
    empty = {"train": Split(images, labels), "test": Split(images[:0], labels[:0])}
    with pytest.raises(DatasetCorruptError, match="'toy' has an empty test split"):
        MedicalDataset("toy", empty, ["a", "b"], norm, "id")
    single = {"train": Split(images, labels * 0), "test": Split(images, labels)}
    with pytest.raises(DatasetCorruptError, match="1 class"):
        MedicalDataset("toy", single, ["a", "b"], norm, "id")
    for mean, std in [((0.5,), (0.0,)), ((0.5,), (-1.0,)), ((math.nan,), (1.0,)), ((), ())]:
        with pytest.raises(ConfigError, match="finite std > 0"):
            Normalization(mean, std)


# JSON never holds NaN -------------------------------------------------------------------------
def test_write_json_atomic_writes_null_for_non_finite_numbers(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(
        path,
        {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": {"d": np.float32("nan")}, "e": 2},
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": {"d": None}, "e": 2}


def test_metrics_lines_write_null_for_non_finite_numbers(tmp_path):
    run = RunDir(tmp_path / "run", {})
    run.metric(loss=torch.tensor(float("nan")), acc=0.5, grad=float("inf"))
    run.close()
    line = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "NaN" not in line and "Infinity" not in line
    record = json.loads(line)
    assert record["loss"] is None and record["grad"] is None and record["acc"] == 0.5


def test_an_undefined_auc_is_written_null_with_its_reason_and_read_back(tmp_path):
    nan = float("nan")
    net = {"acc": 0.5, "auc": nan, "index": 0, "seed": 1, "loss": 0.7, "train_loss": 0.6}
    stats = {"acc_mean": 0.5, "acc_std": 0.0, "auc_mean": nan, "auc_std": nan, "nets": [net]}
    row = {"set": "random", "ipc": 1, "archs": {"convnet": stats}, "wall_s": 1.0}
    path = write_results(tmp_path, {"dataset": "toy", "rows": [row]})
    text = path.read_text()
    assert "NaN" not in text
    written = json.loads(text)["rows"][0]["archs"]["convnet"]
    assert written["auc_mean"] is None and "test split" in written["auc_mean_reason"]
    assert written["nets"][0]["auc"] is None and written["nets"][0]["auc_reason"]
    back = read_results(path).rows[0].archs["convnet"]
    assert back.auc_mean is None and back.nets is not None and back.nets[0].auc is None
