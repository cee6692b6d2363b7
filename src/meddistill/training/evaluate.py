"""The reference evaluation protocol: train K fresh networks on a set, test each on the real test split.

Used for synthetic sets, random real subsets and (with its own epochs) the full training set.
Every network's seed is derived from (seed, architecture, k), so a report is reproducible and
adding architectures does not change the networks of the others.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from meddistill import distributed
from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.models import ModelSpec, build_model_for
from meddistill.models.registry import InputShape, available_models
from meddistill.training import parallel
from meddistill.training.batched import train_networks_batched, unbatchable
from meddistill.training.compiled import COMPILE_AUTO_WORK, compile_on, valid_compile
from meddistill.training.config import TrainConfig
from meddistill.training.dp import PrivateTraining
from meddistill.training.dp_loop import check_dp_model, train_private
from meddistill.training.loop import TrainResult, as_pair, train_network
from meddistill.training.metrics import evaluate_model
from meddistill.utils import Options, derive_seed, is_integer, make_generator

DEFAULT_LR = 0.01
log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """How a set is evaluated (defaults: the MTT protocol; HoP-TM uses batch_size 128).

    `models`: architectures to train on the set; "convnet" means the distillation network
    (depth, width, norm of the spec the caller passes), any other name its default spec.
    `lr`: None uses the step size learned with the synthetic set, or 0.01 when there is none
    (real subsets); a number overrides both.
    `hard_labels`: train on the argmax of soft labels (DD-Ranking's hard-label view: what the
    images carry without their labels); class-index labels are unchanged.

    How the networks are scheduled (not part of the protocol, so left out of reports):
    `workers`: on CPU, train the networks in this many one-thread worker processes; "auto" is
    one per available core (at most one per network), 1 trains them one after another in this
    process. Every network is the same single-threaded computation either way, so the numbers
    equal those of the one-by-one run at one torch thread, bit for bit. Ignored on CUDA.
    `batched`: train the networks of one architecture together (torch.func.vmap over stacked
    parameters); "auto" does so on CUDA only. Float rounding then differs from the one-by-one
    run (parameters agree to about 1e-4 relative after a few epochs); architectures with batch
    norm fall back to one by one.
    """

    models: list[str] = field(default_factory=lambda: ["convnet"])
    num_nets: int = 5
    epochs: int = 1000
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    workers: int | str = "auto"
    batched: bool | str = "auto"
    compile: bool | str = "auto"
    hard_labels: bool = False

    SCHEDULING: ClassVar[tuple[str, ...]] = ("workers", "batched", "compile")
    # Added after evaluations were recorded: left out of identities while at these values.
    LATER_OPTIONS: ClassVar[dict[str, Any]] = {"hard_labels": False}

    def __post_init__(self) -> None:
        # Everything train_config builds is checked here, so a bad value is refused when the
        # job is resolved, named eval.*, not after a whole distillation as train.*.
        check = Options("eval", self)
        if not self.models:
            check.fail("models", "a non-empty list of architectures, e.g. [convnet]")
        unknown = [m for m in self.models if str(m).lower() not in available_models()]
        if unknown:
            check.fail("models", f"architectures from {', '.join(available_models())}", unknown)
        check.counts("num_nets", "epochs", "batch_size")
        check.positive("lr", optional=True)
        check.fraction("momentum")
        check.at_least("weight_decay")
        check.strategy("dsa_strategy")
        if not (self.workers == "auto" or (is_integer(self.workers) and self.workers >= 1)):
            check.fail("workers", "an integer >= 1 (1: one network after another) or auto")
        if not (isinstance(self.batched, bool) or self.batched == "auto"):
            check.fail("batched", "true, false or auto (batched on CUDA only)")
        if not valid_compile(self.compile):
            check.fail("compile", "true, false or auto (on CUDA; on CPU for long trainings)")

    def protocol(self) -> dict[str, Any]:
        """The settings that define the evaluation, without how its networks are scheduled
        (workers, batched): what reports record, so scheduling never changes them. hard_labels
        is recorded only when set, so results recorded before it existed keep their identity."""
        out = {k: v for k, v in to_dict(self).items() if k not in self.SCHEDULING}
        return EvalConfig.identity_section(out)

    @staticmethod
    def identity_section(section: dict[str, Any]) -> dict[str, Any]:
        """An eval section as identities hash it: LATER_OPTIONS left out while unset."""
        later = EvalConfig.LATER_OPTIONS
        return {k: v for k, v in section.items() if not (k in later and v == later[k])}

    def training_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The labels the networks train on: soft labels' argmax under hard_labels."""
        return labels.argmax(dim=1) if self.hard_labels and labels.dim() == 2 else labels

    def workers_for(self, jobs: int, device: torch.device) -> int:
        """Worker processes for `jobs` networks on `device` (1: in this process)."""
        return parallel.workers_for(self.workers, jobs, device)

    def compile_on(self, set_images: int, device: torch.device) -> bool:
        """Whether the training steps are compiled, for a set of `set_images` images (auto
        counts the work of every network of the evaluation: a compile serves them all)."""
        work = set_images * self.epochs * self.num_nets * len(self.models)
        return compile_on(self.compile, device, work, COMPILE_AUTO_WORK)

    def batched_on(self, device: torch.device) -> bool:
        """Whether networks of one architecture train together on `device`."""
        return device.type == "cuda" if self.batched == "auto" else bool(self.batched)

    def train_config(self, lr: float) -> TrainConfig:
        """The per-network training settings: constant lr, x0.1 at half, as the references."""
        return TrainConfig(
            epochs=self.epochs,
            lr=lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            lr_schedule="step_half",
            dsa=self.dsa,
            dsa_strategy=self.dsa_strategy,
        )


@dataclass
class NetResult:
    """One trained network's numbers: acc/auc/loss on the test split (to report), val_* on the
    validation split (to choose by); fractions in [0, 1], NaN where the split was not scored."""

    index: int
    seed: int
    acc: float
    auc: float
    loss: float
    train_loss: float
    val_acc: float = math.nan
    val_auc: float = math.nan
    val_loss: float = math.nan


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and POPULATION std (np.std, ddof=0), as the reference scripts report mean +- std."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


@dataclass
class ArchReport:
    """All networks of one architecture, with mean and population std over them."""

    arch: str
    spec: dict[str, Any]
    nets: list[NetResult]

    def _stats(self, key: str) -> tuple[float, float]:
        return mean_std([getattr(n, key) for n in self.nets])

    @property
    def acc_mean(self) -> float:
        return self._stats("acc")[0]

    @property
    def acc_std(self) -> float:
        return self._stats("acc")[1]

    @property
    def auc_mean(self) -> float:
        return self._stats("auc")[0]

    @property
    def auc_std(self) -> float:
        return self._stats("auc")[1]

    @property
    def val_acc_mean(self) -> float:
        return self._stats("val_acc")[0]

    @property
    def val_acc_std(self) -> float:
        return self._stats("val_acc")[1]

    @property
    def val_auc_mean(self) -> float:
        return self._stats("val_auc")[0]

    @property
    def val_auc_std(self) -> float:
        return self._stats("val_auc")[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "spec": self.spec,
            "nets": [asdict(n) for n in self.nets],
            "acc_mean": self.acc_mean,
            "acc_std": self.acc_std,
            "auc_mean": self.auc_mean,
            "auc_std": self.auc_std,
            "val_acc_mean": self.val_acc_mean,
            "val_acc_std": self.val_acc_std,
            "val_auc_mean": self.val_auc_mean,
            "val_auc_std": self.val_auc_std,
        }


@dataclass
class EvalReport:
    """Per-architecture results of `evaluate_set`; std is the population std (np.std)."""

    archs: dict[str, ArchReport]
    lr: float
    lr_source: str
    num_images: int
    seed: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "archs": {k: v.to_dict() for k, v in self.archs.items()},
            "lr": self.lr,
            "lr_source": self.lr_source,
            "num_images": self.num_images,
            "seed": self.seed,
            "config": self.config,
            "std": "population (np.std, ddof=0), as the reference scripts",
        }

    def summary(self) -> str:
        """One line per architecture, e.g. 'convnet: test acc 72.50 +- 1.40 %, AUC 0.940 +-
        0.010; val acc 73.10 +- 1.20 % (5 nets)'; a split that was not scored is left out."""
        return "\n".join(_summary_line(a, r) for a, r in self.archs.items())


def _summary_line(arch: str, r: ArchReport) -> str:
    parts = []
    if not math.isnan(r.acc_mean):
        parts.append(
            f"test acc {100 * r.acc_mean:.2f} +- {100 * r.acc_std:.2f} %, "
            f"AUC {r.auc_mean:.3f} +- {r.auc_std:.3f}"
        )
    if not math.isnan(r.val_acc_mean):
        parts.append(f"val acc {100 * r.val_acc_mean:.2f} +- {100 * r.val_acc_std:.2f} %")
    return f"{arch}: {'; '.join(parts)} ({len(r.nets)} nets)"


def spec_for(arch: str, base_spec: ModelSpec) -> ModelSpec:
    """The distillation spec for the distillation architecture, else that architecture's default."""
    name = arch.lower()
    if name == base_spec.name or (name == "convnet" and base_spec.name == "convnet3d"):
        return base_spec
    return ModelSpec(name=name)


def resolve_lr(cfg_lr: float | None, learned_lr: float | None) -> tuple[float, str]:
    """cfg.lr wins, then the learned step size, then 0.01; returns (lr, where it came from)."""
    if cfg_lr is not None:
        return float(cfg_lr), "config"
    if learned_lr is not None:
        return float(learned_lr), "learned"
    return DEFAULT_LR, "default"


def _check_set(images: torch.Tensor, labels: torch.Tensor, dataset: MedicalDataset) -> None:
    if tuple(images.shape[1:]) != dataset.image_shape:
        raise ConfigError(
            f"the set's images have shape {tuple(images.shape[1:])} but dataset '{dataset.name}' "
            f"has {dataset.image_shape}; was the set made for another dataset or resolution?"
        )
    if labels.dim() == 2 and labels.shape[1] != dataset.num_classes:
        raise ConfigError(
            f"soft labels have {labels.shape[1]} columns but dataset '{dataset.name}' has "
            f"{dataset.num_classes} classes"
        )
    if (
        labels.dim() == 1
        and labels.numel()
        and not (int(labels.min()) >= 0 and int(labels.max()) < dataset.num_classes)
    ):
        raise ConfigError(
            f"labels must lie in 0..{dataset.num_classes - 1} for dataset '{dataset.name}', "
            f"got {int(labels.min())}..{int(labels.max())}"
        )


def train_fresh_network(
    spec: ModelSpec,
    dataset: InputShape,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    net_seed: int,
    device: torch.device | str | None,
    test: Any,
    progress: str | bool,
    compile: bool = False,
) -> TrainResult:
    """Build a network of `spec` for `dataset` from `net_seed` and train it on (images, labels),
    batch order and augmentation drawn from a generator derived from the same seed."""
    _, result = fresh_trained_network(
        spec, dataset, images, labels, train_cfg,
        net_seed=net_seed, device=device, test=test, progress=progress, compile=compile,
    )  # fmt: skip
    return result


def fresh_trained_network(
    spec: ModelSpec,
    dataset: InputShape,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    net_seed: int,
    device: torch.device | str | None,
    test: Any = None,
    progress: str | bool = False,
    compile: bool = False,
    private: PrivateTraining | None = None,
) -> tuple[nn.Module, TrainResult]:
    """`train_fresh_network`, also returning the trained network (for its features); with
    `private`, trained with DP-SGD (training/dp_loop.py; never compiled)."""
    model = build_model_for(spec, dataset, seed=net_seed, device=device)
    generator = make_generator(derive_seed(net_seed, "train"))
    if private is not None:
        check_dp_model(model, spec.name)
        result = train_private(
            model, images, labels, train_cfg, private,
            generator=generator, test_split=test, progress=progress,
        )  # fmt: skip
        return model, result
    result = train_network(
        model,
        images,
        labels,
        train_cfg,
        generator=generator,
        test_split=test,
        progress=progress,
        compile=compile,
    )
    return model, result


def evaluate_one_network(
    spec: ModelSpec,
    dataset: InputShape,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    *,
    index: int,
    net_seed: int,
    device: torch.device | str | None,
    test: Any,
    progress: str | bool,
    compile: bool = False,
    val: Any = None,
    private: PrivateTraining | None = None,
) -> NetResult:
    """Train one fresh network from `net_seed` (with DP-SGD when `private`); score it on `val`
    and `test` (either None).

    The one place a network of the protocol is made and scored: `evaluate_set` calls it for
    its k-th network, and the benchmark grid for each network it still lacks, so both give
    bit-identical numbers for the same seed. A split not scored leaves its numbers NaN.
    """
    model, result = fresh_trained_network(
        spec, dataset, images, labels, train_cfg,
        net_seed=net_seed, device=device, test=test, progress=progress, compile=compile,
        private=private,
    )  # fmt: skip
    return _net_result(index, net_seed, result, _scores(model, val))


def _scores(model: nn.Module, split: Any) -> dict[str, float] | None:
    """evaluate_model on a Split or an (images, labels) pair; None for no split."""
    return None if split is None else evaluate_model(model, *as_pair(split))


def _net_result(
    index: int, seed: int, result: TrainResult, val: dict[str, float] | None
) -> NetResult:
    val = val or {}
    return NetResult(
        index=index,
        seed=seed,
        acc=_or_nan(result.test_acc),
        auc=_or_nan(result.test_auc),
        loss=_or_nan(result.test_loss),
        train_loss=result.train_loss,
        val_acc=_or_nan(val.get("acc")),
        val_auc=_or_nan(val.get("auc")),
        val_loss=_or_nan(val.get("loss")),
    )


def _or_nan(value: float | None) -> float:
    return float(value) if value is not None else float("nan")


@dataclass(frozen=True)
class NetJob:
    """One network of an evaluation: its architecture, spec, index k and seed."""

    arch: str
    spec: ModelSpec
    index: int
    seed: int


@dataclass(frozen=True)
class _Shape:
    """The input facts a network is built for (what a worker needs of the dataset)."""

    channels: int
    num_classes: int
    image_size: int
    spatial_dims: int


@dataclass
class EvalInputs:
    """What every network of one evaluation shares; sent once to each worker process."""

    shape: _Shape
    images: torch.Tensor
    labels: torch.Tensor
    train_cfg: TrainConfig
    test: tuple[torch.Tensor, torch.Tensor] | None
    device: torch.device
    compile: bool = False
    val: tuple[torch.Tensor, torch.Tensor] | None = None


def _network(inputs: EvalInputs, job: NetJob, progress: str | bool = False) -> NetResult:
    """One network of the evaluation (module level: worker processes call it by name)."""
    return evaluate_one_network(
        job.spec, inputs.shape, inputs.images, inputs.labels, inputs.train_cfg,
        index=job.index, net_seed=job.seed, device=inputs.device, test=inputs.test,
        progress=progress, compile=inputs.compile, val=inputs.val,
    )  # fmt: skip


def _batched_group(
    inputs: EvalInputs, jobs: list[NetJob], progress: bool
) -> list[NetResult] | None:
    """The networks of one architecture trained together, or None (logged) when they cannot be."""
    seeds = [job.seed for job in jobs]
    models = [
        build_model_for(jobs[0].spec, inputs.shape, seed=s, device=inputs.device) for s in seeds
    ]
    reason = unbatchable(models[0], inputs.train_cfg)
    if reason is not None:
        log.warning("eval.batched: %s networks train one by one: %s", jobs[0].arch, reason)
        return None
    results = train_networks_batched(
        models, inputs.images, inputs.labels, inputs.train_cfg,
        generators=[make_generator(derive_seed(s, "train")) for s in seeds],
        test_split=inputs.test,
        progress=f"{jobs[0].arch} nets 1-{len(jobs)} (batched)" if progress else False,
    )  # fmt: skip
    return [
        _net_result(job.index, job.seed, r, _scores(m, inputs.val))
        for job, r, m in zip(jobs, results, models, strict=True)
    ]


def _run_batched(
    inputs: EvalInputs,
    jobs: list[NetJob],
    progress: bool,
    done: Callable[[NetJob, NetResult], None],
) -> list[NetJob]:
    """Train each architecture's networks together where possible; returns the jobs left."""
    left: list[NetJob] = []
    for arch in dict.fromkeys(job.arch for job in jobs):
        group = [job for job in jobs if job.arch == arch]
        nets = _batched_group(inputs, group, progress) if len(group) > 1 else None
        if nets is None:
            left.extend(group)
            continue
        for job, net in zip(group, nets, strict=True):
            done(job, net)
    return left


def _run_jobs(
    inputs: EvalInputs,
    jobs: list[NetJob],
    cfg: EvalConfig,
    progress: bool,
    done: Callable[[NetJob, NetResult], None],
) -> None:
    """Every job's network, batched, in worker processes or one by one as `cfg` asks."""
    if cfg.batched_on(inputs.device):
        jobs = _run_batched(inputs, jobs, progress, done)
    workers = cfg.workers_for(len(jobs), inputs.device)

    def local(job: NetJob) -> NetResult:
        label = f"{job.arch} net {job.index + 1}/{cfg.num_nets}" if progress else False
        return _network(inputs, job, label)

    results = parallel.run_jobs(_network, inputs, jobs, workers, local=local)
    for job, net in zip(jobs, results, strict=True):
        done(job, net)


def _inputs(
    dataset: MedicalDataset,
    images: torch.Tensor,
    labels: torch.Tensor,
    train_cfg: TrainConfig,
    device: torch.device,
    splits: tuple[str, ...],
) -> EvalInputs:
    """The shared inputs, detached (training never needs their gradient, and a tensor in a
    graph cannot travel to a worker); the held-out `splits` the dataset has."""
    shape = _Shape(dataset.channels, dataset.num_classes, dataset.image_size, dataset.spatial_dims)

    def held_out(name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        split = dataset.splits.get(name) if name in splits else None
        if split is None:
            return None
        split = split.to(device)
        return split.images.detach(), split.labels.detach()

    return EvalInputs(
        shape, images.detach(), labels.detach(), train_cfg, held_out("test"), device,
        val=held_out("val"),
    )  # fmt: skip


def _trained_nets(
    inputs: EvalInputs, jobs: list[NetJob], cfg: EvalConfig, progress: bool, shown: str
) -> dict[tuple[str, int], NetResult]:
    """Every job's network by (arch, index), the bar showing each one's `shown` accuracy."""
    nets: dict[tuple[str, int], NetResult] = {}
    with tqdm(total=len(jobs), desc="evaluate", disable=not progress, unit="net") as bar:

        def done(job: NetJob, net: NetResult) -> None:
            nets[job.arch, job.index] = net
            bar.update(1)
            value = net.acc if shown == "acc" else net.val_acc
            bar.set_postfix(arch=job.arch, **{shown: f"{100 * value:.1f}%"})

        _run_jobs(inputs, jobs, cfg, progress, done)
    return nets


def _every_rank_nets(
    inputs: EvalInputs, jobs: list[NetJob], cfg: EvalConfig, progress: bool, shown: str
) -> dict[tuple[str, int], NetResult]:
    """Every job's network; under torchrun each rank trains its share, gathered on all."""
    nets: dict[tuple[str, int], NetResult] = {}
    mine = _trained_nets(inputs, distributed.share(jobs), cfg, progress, shown)
    for part in distributed.gather_objects(mine):
        nets.update(part)
    return nets


def evaluate_set(
    images: torch.Tensor,
    labels: torch.Tensor,
    dataset: MedicalDataset,
    cfg: EvalConfig,
    *,
    base_spec: ModelSpec,
    seed: int,
    lr: float | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
    splits: tuple[str, ...] = ("val", "test"),
) -> EvalReport:
    """Train `cfg.num_nets` fresh networks per architecture on (images, labels) and score each
    on the held-out `splits` the dataset has: val (to choose by) and test (to report).

    Something that only chooses (a periodic evaluation during distillation, a tuning trial)
    passes splits=("val",), so it never sees the test split. `lr` is the step size learned
    with a synthetic set (used when cfg.lr is None). Tensors are moved to `device` (default:
    the images' device) once, and stay there. The networks run as `cfg.workers`,
    `cfg.batched` and `cfg.compile` say; the numbers are the same whichever way they ran (to
    float tolerance when batched or compiled).
    """
    unknown = set(splits) - {"val", "test"}
    if unknown or not splits:
        raise ConfigError(f"evaluate_set scores val and/or test, not {sorted(unknown) or 'none'}")
    _check_set(images, labels, dataset)
    labels = cfg.training_labels(labels)
    device = torch.device(device) if device is not None else images.device
    images, labels = images.to(device), labels.to(device)
    lr_value, lr_source = resolve_lr(cfg.lr, None if lr is None else float(lr))
    if not (math.isfinite(lr_value) and lr_value > 0):
        raise ConfigError(
            f"the {lr_source} learning rate {lr_value:g} is not positive; evaluation cannot train "
            "with it: set eval.lr to a positive number"
        )
    inputs = _inputs(dataset, images, labels, cfg.train_config(lr_value), device, splits)
    inputs.compile = cfg.compile_on(int(images.shape[0]), device)
    jobs = [
        NetJob(arch, spec_for(arch, base_spec), k, derive_seed(seed, arch, k))
        for arch in cfg.models
        for k in range(cfg.num_nets)
    ]
    nets = _every_rank_nets(inputs, jobs, cfg, progress, "acc" if "test" in splits else "val")
    archs = {
        arch: ArchReport(
            arch=arch,
            spec=to_dict(spec_for(arch, base_spec)),
            nets=[nets[arch, k] for k in range(cfg.num_nets)],
        )
        for arch in cfg.models
    }
    return EvalReport(
        archs=archs,
        lr=lr_value,
        lr_source=lr_source,
        num_images=int(images.shape[0]),
        seed=int(seed),
        config=cfg.protocol(),
    )
