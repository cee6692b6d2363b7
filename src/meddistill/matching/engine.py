"""The one matching loop every trajectory-matching method configures.

Per iteration: pick a window on an expert trajectory (schedule.py), unroll a student on the
synthetic images (student.py, graph or exact adjoint), compare student and expert states with
the configured loss terms (losses.py), then update images, step size and labels with SGD +
momentum, and run the hooks (EMA, PTM retraining points). Methods differ only in MatchConfig.

Resumable: every `checkpoint_every` iterations the whole state (state.py), including the
generator, is written atomically; a re-run with the same config continues from it and ends
with exactly the same synthetic set as an uninterrupted run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from meddistill.augment.dsa import DSA
from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.snapshots import save_snapshot
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError, NumericalError
from meddistill.experts.store import TrajectoryStore
from meddistill.matching import losses
from meddistill.matching.config import MatchConfig
from meddistill.matching.loop import drive
from meddistill.matching.schedule import Window, check_schedule, retraining_schedule, sample_window
from meddistill.matching.state import DistillState, prepare_run_folder, resume_state
from meddistill.matching.student import StudentProblem, plan_steps, student_gradients
from meddistill.models import ModelSpec, build_model_for, frozen_mask
from meddistill.models.functional import functional_forward
from meddistill.utils import derive_seed, make_generator

CHECKPOINT = "checkpoint.safetensors"
MetricSink = Callable[[dict[str, Any]], None]


class ImageParameterization(Protocol):
    """Synthetic images produced differentiably from learned tensors (HaBa: bases x
    hallucinators). The engine keeps and updates the tensors; the images follow."""

    images_per_class: int

    def initial_tensors(self) -> dict[str, torch.Tensor]: ...

    def render(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def learning_rates(self, lr_img: float) -> dict[str, float]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class IterationLog:
    """What one iteration reports (the per-iteration log of the run)."""

    iteration: int
    loss: float
    match_loss: float
    shape_loss: float
    overlap_loss: float
    mask_utilisation: float
    kappa: float
    syn_lr: float
    expert: int
    start: int
    end: int
    syn_steps: int
    matched_step: int
    skipped: bool
    seconds: float


def foundation_mask(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """PTM's split of each class: the first ceil(n/2) images of a class form the foundation
    subset S^f, the rest the complement S^c (an even split for even IPC)."""
    hard = labels if labels.dim() == 1 else labels.argmax(dim=1)
    mask = torch.zeros(hard.shape[0], dtype=torch.bool, device=hard.device)
    for c in range(num_classes):
        idx = torch.nonzero(hard == c).flatten()
        mask[idx[: (idx.numel() + 1) // 2]] = True
    return mask


class Distiller:
    """Runs one distillation: `run()` returns the synthetic set and writes checkpoints."""

    def __init__(
        self,
        cfg: MatchConfig,
        dataset: MedicalDataset,
        store: TrajectoryStore,
        spec: ModelSpec,
        *,
        device: torch.device,
        out_dir: str | Path,
        dsa_strategy: str,
        method: str = "custom",
        on_metric: MetricSink | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        trainable: torch.Tensor | None = None,
        parameterization: ImageParameterization | None = None,
    ) -> None:
        store.check_compatible(dataset, spec)
        check_schedule(cfg, store.epochs)
        self.param = parameterization
        # Images per class of the layout: cfg.ipc, or what the parameterisation renders
        self.ipc = parameterization.images_per_class if parameterization is not None else cfg.ipc
        smallest = min(dataset.class_counts("train"))
        if parameterization is None and cfg.ipc > smallest:
            raise ConfigError(
                f"ipc {cfg.ipc} is larger than the smallest class of {dataset.name} "
                f"({smallest} train images); choose ipc <= {smallest}"
            )
        self.cfg, self.dataset, self.store, self.spec = cfg, dataset, store, spec
        self.device = device
        self.out_dir = Path(out_dir)
        self.method = method
        self.on_metric = on_metric or (lambda record: None)
        self.progress = progress
        self.log = log or (lambda message: None)
        self.dsa = DSA(dsa_strategy, spatial_dims=dataset.spatial_dims) if cfg.dsa else None
        self.dsa_strategy = dsa_strategy if cfg.dsa else "none"
        self.model = build_model_for(spec, dataset, seed=0).to(device)
        self.problem = StudentProblem(self.model, self.dsa)
        self.exclude = frozen_mask(self.model).to(device) if cfg.exclude_frozen else None
        self.retraining = retraining_schedule(cfg.iterations, cfg.retraining_points)
        # Images are laid out class by class, ipc each; this layout never changes (soft labels
        # may drift, the class an image was made for does not).
        self.hard_labels = torch.arange(dataset.num_classes, device=device).repeat_interleave(
            self.ipc
        )
        # SeqMatch: images whose flag is False are frozen (their gradient is zeroed)
        num_images = dataset.num_classes * self.ipc
        if trainable is not None and tuple(trainable.shape) != (num_images,):
            raise ConfigError(
                f"trainable mask has shape {tuple(trainable.shape)}; expected ({num_images},), "
                "one flag per synthetic image (class by class)"
            )
        self.trainable = trainable.to(device, torch.bool) if trainable is not None else None
        self.foundation = foundation_mask(self.hard_labels, dataset.num_classes)
        if cfg.overlap and self.ipc < 2:
            self.warn("overlap mitigation does nothing at IPC 1 (no complement subset); it is off")
        if cfg.retraining_points and self.ipc < 2:
            self.warn("retraining points do nothing at IPC 1 (no complement subset); they are off")

    def warn(self, message: str) -> None:
        """Say it on stderr (above any progress bar) and in the run log."""
        tqdm.write(f"warning: {message}", file=sys.stderr)
        self.log(f"warning: {message}")

    # Initialisation -------------------------------------------------------------------
    def _expert_net_logits(self, images: torch.Tensor, expert: int, epoch: int) -> torch.Tensor:
        theta = self.store.load(expert, epoch, device=self.device)
        with torch.no_grad():
            return torch.cat(
                [
                    functional_forward(self.model, theta, chunk, layout=self.problem.layout)
                    for chunk in images.split(256)
                ]
            )

    def _label_epoch(self) -> int:
        e = self.cfg.label_expert_epoch
        return self.store.epochs if e < 0 else e

    def _initial_images(self, gen: torch.Generator) -> torch.Tensor:
        """ipc real training images per class drawn with `gen` (or noise of that shape)."""
        cfg, ds = self.cfg, self.dataset
        per_class = ds.class_indices("train")
        train = ds.train
        chosen = []
        for c, idx in enumerate(per_class):
            idx = idx.to("cpu")
            if cfg.init == "real_correct":
                logits = self._expert_net_logits(
                    train.images[idx.to(train.images.device)].to(self.device),
                    self.store.expert_ids[0],
                    self._label_epoch(),
                )
                correct = idx[(logits.argmax(dim=1) == c).cpu()]
                idx = correct if correct.numel() >= cfg.ipc else idx
            perm = torch.randperm(idx.numel(), generator=gen)[: cfg.ipc]
            chosen.append(idx[perm])
        index = torch.cat(chosen).to(train.images.device)
        images = train.images.index_select(0, index).to(self.device, torch.float32).clone()
        if cfg.init == "noise":
            images = torch.randn(images.shape, generator=gen).to(self.device)
        return images

    def initial_state(self) -> DistillState:
        """Images from real samples per class (or noise), labels hard or expert logits."""
        cfg = self.cfg
        gen = make_generator(derive_seed(cfg.seed, "init"))
        params: dict[str, torch.Tensor] = {}
        if self.param is not None:  # HaBa & co. bring their own initialisation
            params = {k: v.to(self.device) for k, v in self.param.initial_tensors().items()}
            with torch.no_grad():
                images = self.param.render(params).detach()
        else:
            images = self._initial_images(gen)
        labels: torch.Tensor = self.hard_labels.clone()
        momentum_labels = None
        if cfg.soft_labels:
            labels = self._expert_net_logits(images, self.store.expert_ids[0], self._label_epoch())
            momentum_labels = torch.zeros_like(labels)
        lr0 = torch.tensor(cfg.syn_lr_init, dtype=torch.float32, device=self.device)
        lr_param = torch.log(lr0) if cfg.step_size_param == "log" else lr0
        return DistillState(
            iteration=0,
            images=images,
            lr_param=lr_param,
            labels=labels,
            momentum_images=torch.zeros_like(images),
            momentum_lr=torch.zeros_like(lr_param),
            momentum_labels=momentum_labels,
            mask=None,
            ema=images.clone() if cfg.ema_decay > 0 else None,
            params=params,
            momentum_params={k: torch.zeros_like(v) for k, v in params.items()},
        )

    # One iteration --------------------------------------------------------------------
    def syn_lr(self, state: DistillState) -> torch.Tensor:
        p = state.lr_param
        return torch.exp(p) if self.cfg.step_size_param == "log" else p

    def _kappa(self, state: DistillState, element_loss: torch.Tensor, iteration: int) -> float:
        cfg = self.cfg
        if state.kappa_base is None:
            if cfg.kappa_mode == "quantile":
                values = element_loss.detach()
                if self.exclude is not None:
                    values = values[~self.exclude]
                state.kappa_base = float(torch.quantile(values.float().cpu(), cfg.kappa_quantile))
            else:
                state.kappa_base = cfg.kappa_base
        return losses.kappa_schedule(iteration, state.kappa_base, cfg.kappa_mu, cfg.kappa_period)

    def step(self, state: DistillState, generator: torch.Generator) -> IterationLog:
        """One distillation iteration, updating `state` in place."""
        cfg = self.cfg
        t0 = time.perf_counter()
        it = state.iteration
        window: Window = sample_window(it, cfg, self.store.expert_ids, self.store.epochs, generator)
        epochs = [window.start, window.mid, window.end]
        theta_start, theta_mid, theta_target = self.store.load_many(
            window.expert, epochs, device=self.device
        )
        rendered, leaves = None, {}
        if self.param is not None:  # images = render(tensors), differentiable in the tensors
            leaves = {k: v.detach().requires_grad_(True) for k, v in state.params.items()}
            rendered = self.param.render(leaves)
            state.images = rendered.detach()
        num = state.images.shape[0]
        plans = plan_steps(
            num, window.syn_steps, cfg.batch_syn or num, generator, self.dsa, self.device
        )
        syn_lr = self.syn_lr(state)
        n = window.syn_steps
        record: dict[str, float] = {"match": 0.0, "shape": 0.0, "util": 1.0, "kappa": 0.0, "k": n}
        match_mask: dict[str, torch.Tensor] = {}  # the element mask of the match loss, if any

        def select(states: list[torch.Tensor]) -> list[int]:
            k = losses.argmin_step(states, theta_target) if cfg.argmin_step else n
            record["k"] = k
            picked = {k}
            if cfg.shape_potential:
                picked.add(max(1, k // 2))
            if cfg.easy_to_complex:
                element = losses.per_element_loss(states[k], theta_target)
                kappa = self._kappa(state, element, it)
                state.mask = losses.easy_to_complex_mask(
                    element, kappa, state.mask, cfg.e2c_cumulative, self.exclude
                )
                record["kappa"] = kappa
                record["util"] = float(state.mask.float().mean())
                match_mask["mask"] = state.mask
            if cfg.prune_ratio > 0:  # SMDD: drop the hardest elements (not cumulative)
                scores = losses.prune_scores(cfg.prune_by, states[k], theta_start, theta_target)
                keep = losses.prune_mask(scores, cfg.prune_ratio, self.exclude)
                match_mask["mask"] = keep & match_mask["mask"] if match_mask else keep
                record["util"] = float(match_mask["mask"].float().mean())
            return sorted(picked)

        def loss_of(states: dict[int, torch.Tensor]) -> torch.Tensor:
            k = int(record["k"])
            w_end = states[k]
            if match_mask:
                match = losses.masked_param_loss(
                    w_end, theta_start, theta_target, match_mask["mask"]
                )
            else:
                match = losses.normalized_param_loss(w_end, theta_start, theta_target)
            total = cfg.match_weight * match
            record["match"] = float(match.detach())
            if cfg.shape_potential:
                teacher = (theta_start, theta_mid, theta_target)
                student = (theta_start, states[max(1, k // 2)], w_end)
                fn = (
                    losses.shape_potential_code
                    if cfg.shape_form == "code"
                    else losses.shape_potential_paper
                )
                shape = fn(teacher, student)
                record["shape"] = float(shape.detach())
                total = total + cfg.shape_lambda * shape
            return total

        labels = state.labels
        loss, grads, _ = student_gradients(
            self.problem,
            theta_start,
            state.images,
            labels,
            syn_lr,
            plans,
            select,
            loss_of,
            mode=cfg.gradient_mode,
        )
        grad_images = grads.images
        overlap_value = 0.0
        if cfg.overlap and self.ipc >= 2:
            x = state.images.detach().requires_grad_(True)
            sigma = cfg.overlap_sigma or losses.median_sigma(x, self.hard_labels)
            ov = losses.overlap_loss(x, self.hard_labels, self.foundation, sigma)
            (g_ov,) = torch.autograd.grad(cfg.overlap_weight * ov, x)
            grad_images = grad_images + g_ov
            overlap_value = float(ov.detach())
            loss = loss + cfg.overlap_weight * ov.detach()
        if self.trainable is not None:
            keep = self.trainable.view(-1, *([1] * (grad_images.dim() - 1)))
            grad_images = torch.where(keep, grad_images, torch.zeros_like(grad_images))
        loss_value = float(loss)
        if not math.isfinite(loss_value) or not bool(torch.isfinite(grad_images).all()):
            what = (
                f"loss became {loss_value}"
                if not math.isfinite(loss_value)
                else f"the image gradient became non-finite (loss {loss_value:.4g})"
            )
            raise NumericalError(
                f"{what} at iteration {it} (window {window.start}->"
                f"{window.end} of expert {window.expert}); lower lr_img or lr_lr, or use "
                "step_size_param=log; the last good checkpoint is kept"
            )
        skipped = cfg.loss_skip_threshold > 0 and loss_value > cfg.loss_skip_threshold
        if not skipped:
            grad_params = None
            if rendered is not None:  # pull dL/dimages back to the parameterisation's tensors
                names = list(leaves)
                parts = torch.autograd.grad(
                    rendered,
                    [leaves[k] for k in names],
                    grad_outputs=grad_images,
                    allow_unused=True,
                )
                grad_params = {
                    k: g if g is not None else torch.zeros_like(leaves[k])
                    for k, g in zip(names, parts, strict=True)
                }
            self._update(state, grad_images, grads.syn_lr, grads.labels, syn_lr, grad_params)
        self._hooks(state, it)
        state.iteration = it + 1
        return IterationLog(
            iteration=it,
            loss=loss_value,
            match_loss=record["match"],
            shape_loss=record["shape"],
            overlap_loss=overlap_value,
            mask_utilisation=record["util"],
            kappa=record["kappa"],
            syn_lr=float(self.syn_lr(state)),
            expert=window.expert,
            start=window.start,
            end=window.end,
            syn_steps=n,
            matched_step=int(record["k"]),
            skipped=skipped,
            seconds=round(time.perf_counter() - t0, 4),
        )

    def _update(
        self,
        state: DistillState,
        grad_images: torch.Tensor,
        grad_syn_lr: torch.Tensor,
        grad_labels: torch.Tensor | None,
        syn_lr: torch.Tensor,
        grad_params: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """SGD with momentum (torch.optim.SGD's rule: buf = m*buf + g; p -= lr*buf)."""
        cfg = self.cfg
        with torch.no_grad():
            if grad_params is not None and self.param is not None:
                lrs = self.param.learning_rates(cfg.lr_img)
                for name, g in grad_params.items():
                    state.momentum_params[name].mul_(cfg.momentum_img).add_(g)
                    state.params[name].sub_(lrs[name] * state.momentum_params[name])
                state.images = self.param.render(state.params).detach()
            else:
                state.momentum_images.mul_(cfg.momentum_img).add_(grad_images)
                state.images.sub_(cfg.lr_img * state.momentum_images)
            g_lr = grad_syn_lr.reshape(())
            if cfg.step_size_param == "log":
                g_lr = g_lr * syn_lr  # chain rule through alpha = exp(rho)
            state.momentum_lr.mul_(cfg.momentum_lr).add_(g_lr)
            state.lr_param.sub_(cfg.lr_lr * state.momentum_lr)
            if cfg.soft_labels and cfg.learn_labels and grad_labels is not None:
                state.momentum_labels.mul_(cfg.momentum_y).add_(grad_labels)
                state.labels.sub_(cfg.lr_y * state.momentum_labels)
        if cfg.step_size_param == "linear" and not float(state.lr_param) > 0:
            raise NumericalError(
                f"the learned step size became {float(state.lr_param):.3g} (non-positive) at "
                f"iteration {state.iteration}; lower lr_lr (now {cfg.lr_lr}) or use "
                "step_size_param=log; the last good checkpoint is kept"
            )

    def _hooks(self, state: DistillState, it: int) -> None:
        """EMA of images (FTD/ATT) and PTM retraining points, after the update of `it`."""
        cfg = self.cfg
        done = it + 1
        if state.ema is not None:
            with torch.no_grad():
                state.ema.mul_(cfg.ema_decay).add_(state.images, alpha=1.0 - cfg.ema_decay)
        if not self.retraining or self.ipc < 2:
            return
        complement = ~self.foundation
        for snap_it, retrain_it in self.retraining:
            if done == snap_it:
                state.snapshots[retrain_it] = state.images[complement].detach().clone()
            if done == retrain_it and retrain_it in state.snapshots:
                with torch.no_grad():
                    state.images[complement] = state.snapshots.pop(retrain_it)
                    state.momentum_images[complement] = 0.0
                self.log(
                    f"retraining point at iteration {done}: complement subset reset to its "
                    f"snapshot of iteration {snap_it}"
                )

    # The run ---------------------------------------------------------------------------
    def checkpoint_meta(self) -> dict[str, Any]:
        meta = {
            "config": to_dict(self.cfg),
            "spec": to_dict(self.spec),
            "buffer_id": self.store.buffer_id,
            "source_id": self.dataset.source_id,
            "method": self.method,
        }
        if self.param is not None:  # only then, so existing checkpoints still resume
            meta["parameterization"] = self.param.describe()
        return meta

    def _load_or_init(self) -> tuple[DistillState, torch.Generator]:
        ckpt = self.out_dir / CHECKPOINT
        generator = make_generator(derive_seed(self.cfg.seed, "distill"))
        state = resume_state(
            ckpt,
            lambda path: DistillState.load(path, self.device),
            self.checkpoint_meta(),
            generator,
            "configuration or buffer",
        )
        if state is None:
            return self.initial_state(), generator
        self.log(f"resuming from {ckpt} at iteration {state.iteration}")
        return state, generator

    def _save(self, state: DistillState, generator: torch.Generator) -> None:
        state.generator_state = generator.get_state()
        state.save(self.out_dir / CHECKPOINT, self.checkpoint_meta())

    def run(
        self, evaluate: Callable[[SyntheticSet, int], dict[str, Any]] | None = None
    ) -> SyntheticSet:
        """Iterate to cfg.iterations (resuming if a checkpoint exists); return the final set."""
        cfg = self.cfg
        prepare_run_folder(self.out_dir, CHECKPOINT)
        state, generator = self._load_or_init()

        def advance() -> dict[str, str]:
            entry = self.step(state, generator)
            if entry.iteration % cfg.log_every == 0:
                self.on_metric({"stage": "distill", **entry.__dict__})
            done = state.iteration
            if cfg.snapshot_every and (done % cfg.snapshot_every == 0 or done == 1):
                save_snapshot(self.out_dir, done, state.images, self.hard_labels)
            return {
                "loss": f"{entry.loss:.4f}",
                "lr": f"{entry.syn_lr:.2e}",
                "win": f"{entry.start}-{entry.end}",
            }

        def periodic_eval(done: int) -> None:
            result = evaluate(self.synthetic_set(state), done)  # type: ignore[misc]
            self.on_metric({"stage": "eval", "iteration": done, **result})

        drive(
            total=cfg.iterations,
            position=lambda: state.iteration,
            advance=advance,
            save=lambda: self._save(state, generator),
            checkpoint_every=cfg.checkpoint_every,
            eval_every=cfg.eval_every,
            evaluate=periodic_eval if evaluate else None,
            desc=f"distill {self.method}",
            unit="it",
            progress=self.progress,
        )
        return self.synthetic_set(state)

    def synthetic_set(self, state: DistillState) -> SyntheticSet:
        """The shareable result: EMA images when an EMA is kept (FTD, ATT), soft labels as
        probabilities (softmax of the learned logits)."""
        images = state.ema if state.ema is not None else state.images
        labels = torch.softmax(state.labels, dim=1) if self.cfg.soft_labels else state.labels
        return SyntheticSet(
            images=images.detach().cpu().clone(),
            labels=labels.detach().cpu().clone(),
            normalization=self.dataset.normalization,
            class_names=list(self.dataset.class_names),
            dataset=self.dataset.name,
            source_id=self.dataset.source_id,
            syn_lr=float(self.syn_lr(state)),
            meta={
                **self.checkpoint_meta(),
                "iteration": state.iteration,
                "dsa_strategy": self.dsa_strategy,
            },
        )
