"""The Python API: distil from a notebook in five lines.

    import meddistill as md
    ds  = md.load_dataset("breastmnist", root="...")
    exp = md.train_experts(ds, method="mtt", experts=1, epochs=6)
    syn = md.distill(ds, "hoptm", ipc=1, experts=exp, iterations=2)
    print(md.evaluate(syn, ds, num_nets=1, epochs=2))
    print(md.audit(syn, ds).verdict.paragraph)   # near copies, membership attack, verdict

Defaults follow from what is given: the DSA strategy from the dataset (no flips where a label
names a side), the experts' optimiser from the method, the matching window kept inside the
experts' epochs, the device auto (CUDA when present), the method's published settings
otherwise. Nothing is written unless `out=` names a folder; the same call through the CLI with
the same seed gives a bit-identical synthetic set.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

from meddistill.app.config import DatasetConfig
from meddistill.app.defaults import fit_to_data, fit_window
from meddistill.app.private import set_privacy
from meddistill.data.dataset import MedicalDataset
from meddistill.data.registry import dsa_strategy_for
from meddistill.data.synthetic import SyntheticSet
from meddistill.experts.config import BufferConfig, expert_train_config
from meddistill.experts.generate import generate_buffer
from meddistill.experts.store import TrajectoryStore, train_batch_size
from meddistill.matching.config import LatentConfig
from meddistill.matching.latent import Autoencoder, autoencoder_for, fit_autoencoder
from meddistill.matching.loop import DistillRun
from meddistill.methods.registry import get_method
from meddistill.models.spec import ModelSpec
from meddistill.privacy import (
    AuditConfig,
    AuditNetworks,
    AuditReport,
    ShadowPipeline,
    audit_set,
    save_audit,
)
from meddistill.runs import slug
from meddistill.training.config import TrainConfig
from meddistill.training.dp import DPConfig
from meddistill.training.evaluate import EvalConfig, EvalReport, evaluate_set
from meddistill.utils import derive_seed, resolve_device


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> MedicalDataset:
    """A dataset by name (MedMNIST subsets, busi, covid19-cxr, ham10000, folder:PATH); options
    as the config's `dataset:` section (size, resize_to, channels, split_seed, download, ...).
    A MedicalDataset built from your own tensors works everywhere a loaded one does."""
    return DatasetConfig(name=name, root=None if root is None else str(root), **options).load()


def _scratch_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="meddistill-experts-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def train_experts(
    dataset: MedicalDataset,
    method: str = "mtt",
    experts: int = 5,
    epochs: int = 10,
    *,
    model: ModelSpec | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    dp: DPConfig | None = None,
) -> TrajectoryStore:
    """Train `experts` networks for `epochs` epochs with the optimiser `method` expects (SGD
    for MTT, GSAM for HoP-TM/PTM/FTD/DATM) and the dataset's DSA strategy. Without `out` the
    trajectories live in a temporary folder removed when Python exits. `dp` trains them with
    DP-SGD (Opacus, SGD whatever the method): all of them together (epsilon, delta)-DP."""
    entry = get_method(method)
    train = dataclasses.replace(
        expert_train_config(epochs),
        optimizer=(entry.experts or "sgd") if dp is None else "sgd",
        dsa_strategy=dsa_strategy_for(dataset),
    )
    cfg = BufferConfig(
        num_experts=experts, epochs=epochs, model=model or ModelSpec(), train=train, seed=seed,
        dp=dp,
    )  # fmt: skip
    folder = Path(out) if out is not None else _scratch_folder() / slug(dataset.name)
    dev = resolve_device(device)
    return generate_buffer(dataset.to(dev), cfg, folder, device=dev, progress=progress)


def train_autoencoder(
    dataset: MedicalDataset, progress: bool = True, **settings: Any
) -> Autoencoder:
    """The autoencoder of the latent parameterisation, trained on `dataset`'s train split
    (`settings`: match.latent's keys: channels, downsample, width, epochs, lr, ...)."""
    return fit_autoencoder(dataset, LatentConfig(**settings), progress)


def distill(
    dataset: MedicalDataset,
    method: str = "hoptm",
    *,
    ipc: int = 1,
    experts: TrajectoryStore | None = None,
    iterations: int | None = None,
    model: ModelSpec | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    autoencoder: Autoencoder | None = None,
    **options: Any,
) -> SyntheticSet:
    """Distil `dataset` into `ipc` images per class with `method` (any name of
    meddistill.methods.registry); `options` are the method's config keys. With
    parameterization="latent", `autoencoder` (train_autoencoder) is the decoder; without it
    one is trained here (or read from latent={"path": ...})."""
    entry = get_method(method)
    options = {**options, "ipc": ipc}
    if iterations is not None:
        options["iterations"] = iterations
    config = entry.make_config(options)
    if experts is not None:
        config, _ = fit_window(config, entry.windows_of, experts.epochs, set(options))
    batch = train_batch_size(experts.meta) if experts is not None else None
    config, _ = fit_to_data(config, set(options), train_images=len(dataset.train),
                            expert_batch=batch, image_shape=dataset.image_shape,
                            num_classes=dataset.num_classes)  # fmt: skip
    dev = resolve_device(device)
    if getattr(config, "parameterization", "pixel") == "latent" and autoencoder is None:
        autoencoder = autoencoder_for(dataset, config.latent, None, lambda _: None, progress)
    run = DistillRun(
        seed=seed, out_dir=Path(out) if out is not None else None,
        dsa_strategy=getattr(config, "dsa_strategy", None) or dsa_strategy_for(dataset),
        method=entry.name, progress=progress, autoencoder=autoencoder,
    )  # fmt: skip
    data = dataset.to(dev)
    syn = entry.distill(
        data, config, experts=experts, model=model or ModelSpec(), device=dev, run=run
    )
    private = entry.experts is not None and experts is not None and experts.privacy is not None
    if private:  # the engine refused every read of real images (match.init noise)
        syn.meta["privacy"] = set_privacy(experts.privacy, experts.buffer_id, final_eval=False)
    if out is not None:
        syn.save(Path(out) / "synthetic")
    return syn


def evaluate(
    synthetic: SyntheticSet,
    dataset: MedicalDataset,
    *,
    num_nets: int = 5,
    epochs: int = 300,
    models: tuple[str, ...] = ("convnet",),
    lr: float | None = None,
    model: ModelSpec | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> EvalReport:
    """Train `num_nets` fresh networks per architecture on the set (its learned step size
    unless `lr`) and test them on the dataset's test split: acc and AUC, mean ± std."""
    dev = resolve_device(device)
    data = dataset.to(dev)
    cfg = EvalConfig(
        models=list(models), num_nets=num_nets, epochs=epochs, lr=lr,
        dsa_strategy=dsa_strategy_for(dataset),
    )  # fmt: skip
    return evaluate_set(
        synthetic.images.to(dev), synthetic.labels.to(dev), data, cfg,
        base_spec=model or ModelSpec(), seed=derive_seed(seed, "final-eval"),
        lr=lr if lr is not None else synthetic.syn_lr, progress=progress,
    )  # fmt: skip


def audit(
    synthetic: SyntheticSet,
    dataset: MedicalDataset,
    *,
    num_nets: int = 2,
    epochs: int = 300,
    full_epochs: int = 5,
    members: int = 1000,
    quantile: float = 0.01,
    references: tuple[str, ...] = ("full", "random"),
    bootstrap: int = 1000,
    pairs: int = 8,
    lr: float | None = None,
    model: ModelSpec | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    out: str | Path | None = None,
    shadows: int = 0,
    pipeline: ShadowPipeline | None = None,
) -> AuditReport:
    """Would sharing `synthetic` give away patients of `dataset`? Near copies of training
    images (pixel and feature space, against held-out images' own distances), a loss
    membership attack on `num_nets` networks trained `epochs` epochs on the set (and on the
    `references`), and a green/amber/red verdict (meddistill.privacy.verdict). `out` names a
    folder for audit.json and the pairs PNGs; without it nothing is written.
    `shadows` > 0 adds LiRA: `pipeline` (a meddistill.privacy.ShadowPipeline, whose
    train(half, k) returns the networks a run of the set's pipeline on `half` gives) runs on
    that many random halves of the data; `meddistill audit RUN audit.shadows=N` builds it from
    the set's own recipe."""
    strategy = dsa_strategy_for(dataset)
    cfg = AuditConfig(quantile=quantile, pairs=pairs, members=members, bootstrap=bootstrap,
                      references=list(references), shadows=shadows)  # fmt: skip
    nets = AuditNetworks(
        attack=EvalConfig(num_nets=num_nets, epochs=epochs, lr=lr, dsa_strategy=strategy),
        full_train=TrainConfig(epochs=full_epochs, lr=0.01, dsa_strategy=strategy),
        model=model or ModelSpec(), seed=seed,
    )  # fmt: skip
    report = audit_set(synthetic, dataset, cfg, nets, device=resolve_device(device),
                       progress=progress, shadows=pipeline, work=out)  # fmt: skip
    if out is not None:
        save_audit(report, synthetic, dataset, out, pairs)
    return report


__all__ = ["audit", "distill", "evaluate", "load_dataset", "train_experts"]
