"""The jobs' configs: one dataclass per command, validated once when resolved (`resolve`):
names and types by meddistill.config.from_dict, ranges by each section's `__post_init__`, an
impossible value named by the dotted option a user types (`experts.train.lr`).

Every job has one `seed` (the run's random draws) and one `device`; the DSA strategy is the
dataset's unless set, decided once per run (`DatasetConfig.strategy`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from meddistill.config import from_dict, to_dict
from meddistill.data.dataset import MedicalDataset, Normalization
from meddistill.data.registry import default_dsa_strategy, load_dataset
from meddistill.experts.config import BufferConfig, buffer_section_identity
from meddistill.models.spec import ModelSpec
from meddistill.privacy.config import AuditConfig
from meddistill.training.config import TrainConfig
from meddistill.training.dp import DPConfig
from meddistill.training.evaluate import EvalConfig
from meddistill.utils import Options, is_finite_number, is_integer, resolve_device

T = TypeVar("T")


@dataclass
class DatasetConfig:
    """Which dataset and how to prepare it (see meddistill.data.registry.load_dataset)."""

    name: str = "bloodmnist"
    root: str | None = None
    size: int | None = None
    resize_to: int | None = None
    download: bool = False
    channels: int | None = None
    split_seed: int = 0
    normalization: dict[str, list[float]] | None = None
    dsa_strategy: str | None = None
    verify_md5: bool = True  # MedMNIST only: false accepts a file whose md5 differs (recorded)
    val_fraction: float | None = None  # image folders: share of each class carved for val

    def __post_init__(self) -> None:
        check = Options("dataset", self)
        if not (isinstance(self.name, str) and self.name.strip()):
            check.fail("name", "a dataset name such as bloodmnist, or folder:PATH")
        check.counts("size", "resize_to", optional=True)
        if self.channels is not None and self.channels not in (1, 3):
            check.fail("channels", "1 (grey) or 3 (RGB) or null (the dataset's own)")
        check.seeds("split_seed")
        check_normalization(check, self.normalization, self.channels)
        check.strategy("dsa_strategy")
        if self.val_fraction is not None and not (
            is_finite_number(self.val_fraction) and 0 <= self.val_fraction < 1
        ):
            check.fail("val_fraction", "a fraction in [0, 1) (0: no val split) or null (0.1)")

    def load(self) -> MedicalDataset:
        norm = Normalization.from_dict(self.normalization) if self.normalization else None
        extra: dict[str, Any] = {} if self.verify_md5 else {"verify_md5": False}
        if self.val_fraction is not None:  # image folders only; MedMNIST refuses it by name
            extra["val_fraction"] = self.val_fraction
        return load_dataset(
            self.name,
            root=self.root,
            size=self.size,
            resize_to=self.resize_to,
            download=self.download,
            channels=self.channels,
            split_seed=self.split_seed,
            normalization=norm,
            **extra,
        )

    def strategy(self) -> str:
        """The DSA strategy: the one given, else the dataset's default."""
        return (
            self.dsa_strategy if self.dsa_strategy is not None else default_dsa_strategy(self.name)
        )


# Dataset options added after run and artifact identities existed: left out of an identity
# while unset, so every identity made before them holds.
_LATER_DATASET_OPTIONS = ("val_fraction",)


def dataset_section_identity(section: dict[str, Any]) -> dict[str, Any]:
    """A dataset config section as identities hash it: later options dropped while unset."""
    return {k: v for k, v in section.items() if not (k in _LATER_DATASET_OPTIONS and v is None)}


# Job options added after run folders were named by their config's hash: left out while unset.
_LATER_JOB_OPTIONS = ("full_dp",)


def job_identity(job: Any) -> dict[str, Any]:
    """A job as the hash naming its run folder sees it: later options dropped while unset, in
    the job and in its experts/buffer section (`dp`), so folders named before them hold."""
    out = {k: v for k, v in to_dict(job).items() if not (k in _LATER_JOB_OPTIONS and v is None)}
    for key in ("experts", "buffer"):
        if isinstance(out.get(key), dict):
            out[key] = buffer_section_identity(out[key])
    return out


def check_normalization(
    check: Options, norm: dict[str, list[float]] | None, channels: int | None
) -> None:
    """dataset.normalization: {mean: [...], std: [...]}, one finite mean and one std > 0 per
    channel (a std of 0 divides by zero, a negative one flips the images)."""
    if norm is None:
        return
    rule = "{mean: [m, ...], std: [s, ...]} with one finite mean and one finite std > 0 per channel"
    if set(norm) != {"mean", "std"}:
        check.fail("normalization", rule, norm)
    mean, std = norm["mean"], norm["std"]
    if not (isinstance(mean, list) and isinstance(std, list) and 1 <= len(mean) == len(std)):
        check.fail("normalization", rule, norm)
    if not all(is_finite_number(m) for m in mean):
        check.fail("normalization", rule, norm)
    if not all(is_finite_number(s) and s > 0 for s in std):
        check.fail("normalization", rule, norm)
    if channels is not None and len(mean) != channels:
        check.fail("normalization", f"{rule} (dataset.channels={channels})", norm)


@dataclass
class BufferJob:
    """`meddistill buffer`: train experts and record their trajectories."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(num_experts=5, epochs=10))
    out: str | None = None
    seed: int | None = None  # None: buffer.seed
    device: str = "auto"
    tuned_for: str | None = None  # the dataset a preset was tuned on (warned on another)

    def __post_init__(self) -> None:
        check = Options("", self)
        check.seeds("seed", optional=True)
        check_tuned_for(check, self.tuned_for)


@dataclass
class BaselineJob:
    """`meddistill baseline`: full train set and random real subsets, evaluated the same way."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    ipcs: list[int] = field(default_factory=lambda: [1, 10, 50])
    full: bool = True
    full_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=30, lr=0.01, batch_size=256)
    )
    full_nets: int = 1
    full_dp: DPConfig | None = None  # DP-SGD full-data networks at (epsilon, delta); null: off
    eval: EvalConfig = field(default_factory=EvalConfig)
    subset_lr: float = 0.01
    seed: int = 0
    device: str = "auto"
    tuned_for: str | None = None  # the dataset a preset was tuned on (warned on another)

    def __post_init__(self) -> None:
        check = Options("", self)
        check_tuned_for(check, self.tuned_for)
        if self.full_dp is not None and self.full_train.optimizer != "sgd":
            check.fail("full_dp", "null with full_train.optimizer gsam (DP-SGD trains with sgd)")
        if not all(is_integer(k) and k >= 1 for k in self.ipcs):
            check.fail("ipcs", "a list of integers >= 1 (images per class of each subset)")
        if not self.ipcs and not self.full:
            check.fail("ipcs", "non-empty when full=false (else nothing is evaluated)")
        check.counts("full_nets")
        check.positive("subset_lr")
        check.seeds("seed")


@dataclass
class EvaluateJob:
    """`meddistill evaluate`: train K fresh networks on a synthetic set (or a random subset)."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    synthetic: str | None = None
    ipc: int | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    eval: EvalConfig = field(default_factory=EvalConfig)
    subset_lr: float = 0.01
    seed: int = 0
    device: str = "auto"
    tuned_for: str | None = None  # the dataset a preset was tuned on (warned on another)

    def __post_init__(self) -> None:
        check = Options("", self)
        check_tuned_for(check, self.tuned_for)
        check.counts("ipc", optional=True)
        check.positive("subset_lr")
        check.seeds("seed")


@dataclass
class DistillJob:
    """`meddistill distill`: experts (made or reused), the method, final evaluation, artifacts.

    `match` holds the method's own options (validated into the method's config type when the
    job is resolved); `allow_dsa_mismatch` lets a given buffer made with another DSA strategy
    be used anyway (said in the log).
    """

    method: str = "hoptm"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelSpec = field(default_factory=ModelSpec)
    buffer: str | None = None  # an existing buffer folder; None: make/reuse one from `experts`
    experts: BufferConfig = field(default_factory=lambda: BufferConfig(num_experts=5, epochs=10))
    expert_optimizer: str | None = None  # None: what the method expects (sgd or gsam)
    match: dict[str, Any] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    final_eval: bool = True
    allow_dsa_mismatch: bool = False
    out: str | None = None
    seed: int = 0
    device: str = "auto"
    keep_checkpoint: bool = False  # keep the distillation checkpoint once the set is saved
    tuned_for: str | None = None  # the dataset a preset was tuned on (warned on another)

    def __post_init__(self) -> None:
        check = Options("", self)
        check_tuned_for(check, self.tuned_for)
        if self.expert_optimizer is not None:
            check.choice("expert_optimizer", ("sgd", "gsam"))
        check.seeds("seed")


@dataclass
class TuneConfig:
    """The search: its budget (`trials`, and `minutes` when > 0, whichever ends first), the
    knobs (`params`; empty: every knob the method has), pruning (`report_every` iterations
    between the short val evaluations, 0: a quarter of match.iterations; a trial is pruned
    from its second short evaluation on, below the median of earlier trials at that point,
    once `startup_trials` trials completed; `prune: false` keeps every trial) and the TPE
    sampler's `seed`."""

    trials: int = 20
    minutes: float = 0.0
    params: list[str] = field(default_factory=list)
    report_every: int = 0  # 0: iterations // 4
    startup_trials: int = 4
    prune: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check = Options("tune", self)
        check.counts("trials", "startup_trials")
        check.at_least("minutes", zero="0: no time limit")
        check.counts("report_every", minimum=0, zero="0: a quarter of match.iterations")
        check.seeds("seed")
        if not all(isinstance(p, str) for p in self.params):
            check.fail("params", "a list of option names, e.g. [lr_img, syn_steps]")


@dataclass
class TuneJob(DistillJob):
    """`meddistill tune`: a distill job (the search's centre) plus the search's settings."""

    tune: TuneConfig = field(default_factory=TuneConfig)


@dataclass
class CoresetJob:
    """`meddistill coreset`: real images chosen by random, herding or k-center selection."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    selection: str = "herding"
    ipc: int = 10
    model: ModelSpec = field(default_factory=ModelSpec)
    feature_epochs: int = 5  # epochs of the network whose embeddings rank the samples
    eval: EvalConfig = field(default_factory=EvalConfig)
    final_eval: bool = True
    seed: int = 0
    out: str | None = None
    device: str = "auto"
    keep_checkpoint: bool = False  # keep the distillation checkpoint once the set is saved
    tuned_for: str | None = None  # the dataset a preset was tuned on (warned on another)

    def __post_init__(self) -> None:
        check = Options("", self)
        check_tuned_for(check, self.tuned_for)
        check.counts("ipc", "feature_epochs")
        check.seeds("seed")


@dataclass
class AuditJob:
    """`meddistill audit`: near copies of training images and a membership attack on a
    synthetic set (`synthetic`: a distill run folder, a set folder or its .safetensors).

    `eval`: how the attack's K networks (eval.num_nets) train on the set and on the random
    reference, the evaluation protocol (one architecture); `full_train`: the network(s) on the
    full train split whose features the memorisation check uses (the full reference). The
    networks train one after another in this process (eval.workers, batched, compile unused).
    """

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    synthetic: str | None = None  # SET: a distill run folder, a set folder or .safetensors
    model: ModelSpec = field(default_factory=ModelSpec)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(num_nets=2))
    full_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=5, lr=0.01, batch_size=256)
    )
    audit: AuditConfig = field(default_factory=AuditConfig)
    subset_lr: float = 0.01  # step size of the random reference's networks (eval.lr wins)
    seed: int = 0
    out: str | None = None  # run folder (default runs/audit/<dataset>-<hash>)
    device: str = "auto"
    tuned_for: str | None = None  # the dataset a preset was tuned on (warned on another)

    def __post_init__(self) -> None:
        check = Options("", self)
        check_tuned_for(check, self.tuned_for)
        if len(self.eval.models) != 1:
            check.fail("eval.models", "one architecture (the attack's networks)", self.eval.models)
        check.positive("subset_lr")
        check.seeds("seed")


def check_tuned_for(check: Options, value: str | None) -> None:
    """`tuned_for` names a dataset (a preset's own), so the warning it triggers can name it."""
    if value is not None and not value.strip():
        check.fail("tuned_for", "a dataset name (the one the preset was tuned on) or null")


def resolve(job_cls: type, data: dict[str, Any]) -> Any:
    """Build and validate a job dataclass from a merged config dict: every option of every
    section is checked here (and named as the user typed it, e.g. `experts.train.lr`),
    before any data is loaded or any folder made."""
    return from_dict(job_cls, data, "")


def device_of(job: Any) -> torch.device:
    """The job's device, resolved once (auto: CUDA when present)."""
    return resolve_device(job.device)
