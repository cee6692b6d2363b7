"""The one matching loop every trajectory-matching method assembles from parts.

Per iteration: the method's window schedule picks a stretch of an expert trajectory
(schedule.py), a student is unrolled on the synthetic images (student.py, graph or exact
adjoint), the method's step choice, element masks and loss terms compare student and expert
(terms.py), image terms act on the images, then images, step size and labels are updated with
SGD + momentum and the hooks run (hooks.py). The engine never asks which paper it serves:
a method is the `TrajectoryParts` it hands over (see meddistill.methods).

Resumable: every `checkpoint_every` iterations the whole state (state.py), including the
generator, is written atomically; a re-run with the same config continues from it and ends
with exactly the same synthetic set as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from meddistill import distributed
from meddistill.augment.dsa import DSA
from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset
from meddistill.data.draws import check_ipc, real_per_class
from meddistill.data.snapshots import save_snapshot
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ConfigError, NumericalError
from meddistill.experts.store import TrajectoryStore
from meddistill.matching.config import TrajectoryConfig
from meddistill.matching.hooks import Hook
from meddistill.matching.labels import LabelMode, label_mode
from meddistill.matching.loop import DistillLoop, DistillRun
from meddistill.matching.parameterizations import PER_IMAGE, build_parameterization
from meddistill.matching.schedule import Window, WindowSchedule, check_schedule, sample_window
from meddistill.matching.state import DistillState
from meddistill.matching.student import StudentProblem, plan_steps, student_gradients
from meddistill.matching.terms import (
    ElementMask,
    ImageTerm,
    LossTerm,
    MatchContext,
    ParameterMatch,
    StepChoice,
    last_step,
)
from meddistill.matching.windows import (
    Merged,
    WindowResult,
    check_window_count,
    merge,
    state_view,
)
from meddistill.models import ModelSpec, build_model_for, frozen_mask
from meddistill.models.functional import functional_forward
from meddistill.utils import derive_seed, make_generator


class ImageParameterization(Protocol):
    """Synthetic images produced differentiably from learned tensors (HaBa: bases x
    hallucinators). The engine keeps and updates the tensors; the images follow."""

    images_per_class: int

    def initial_tensors(self) -> dict[str, torch.Tensor]: ...

    def render(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def learning_rates(self, lr_img: float) -> dict[str, float]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass
class TrajectoryParts:
    """What a trajectory method assembles: the engine runs exactly these."""

    windows: WindowSchedule
    terms: list[LossTerm] = field(default_factory=lambda: [ParameterMatch()])
    masks: list[ElementMask] = field(default_factory=list)
    step_choice: StepChoice = last_step
    image_terms: list[ImageTerm] = field(default_factory=list)
    labels: LabelMode | None = None  # None: as the config's label knobs say (label_mode)
    hooks: list[Hook] = field(default_factory=list)
    skip_above: float = 0.0  # DATM: skip the update when the loss exceeds this (0: never)
    parameterization: ImageParameterization | None = None
    trainable: torch.Tensor | None = None  # SeqMatch: False freezes an image


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


def class_layout(num_classes: int, ipc: int, device: torch.device) -> torch.Tensor:
    """The hard label of every synthetic image: laid out class by class, ipc each."""
    return torch.arange(num_classes, device=device).repeat_interleave(ipc)


def check_private_parts(
    cfg: TrajectoryConfig, parts: TrajectoryParts, store: TrajectoryStore
) -> None:
    """On a DP buffer the engine reads only trajectories and noise: refuse what would read
    the train split (app.dp says why each setting is refused, before any work)."""
    if cfg.parameterization == "latent":
        raise ConfigError(
            f"the buffer at {store.path} is differentially private; match.parameterization="
            "latent decodes through an autoencoder trained on the private images: use pixel "
            "or dct"
        )
    if cfg.init != "noise" or parts.parameterization is not None:
        what = f"init {cfg.init}" if cfg.init != "noise" else "an image parameterisation"
        raise ConfigError(
            f"the buffer at {store.path} is differentially private; {what} would read real "
            "training images: use match.init=noise (pixels)"
        )


class Distiller(DistillLoop[DistillState]):
    """Runs one trajectory distillation: `execute()` returns the synthetic set."""

    unit = "it"

    def __init__(
        self,
        cfg: TrajectoryConfig,
        parts: TrajectoryParts,
        dataset: MedicalDataset,
        store: TrajectoryStore,
        spec: ModelSpec,
        *,
        device: torch.device,
        run: DistillRun,
    ) -> None:
        store.check_compatible(dataset, spec)
        check_schedule(parts.windows, store.epochs)
        if parts.labels is None:  # every trajectory method: hard or expert soft labels
            parts = replace(parts, labels=label_mode(cfg))
        self.cfg, self.parts, self.run = cfg, parts, run
        self.dataset, self.store, self.spec, self.device = dataset, store, spec, device
        # A method's own parameterisation (HaBa) brings its initial tensors; the engine's
        # (match.parameterization: dct, latent) encodes the images drawn as for pixels.
        self.param = parts.parameterization or build_parameterization(
            cfg.parameterization, cfg.dct_keep, dataset.image_shape, cfg.ipc, run.autoencoder
        )
        self.encodes = parts.parameterization is None and self.param is not None
        self.ipc = self.param.images_per_class if self.param is not None else cfg.ipc
        self.private = store.privacy is not None
        if self.private:
            check_private_parts(cfg, parts, store)
        elif parts.parameterization is None:
            check_ipc(dataset, cfg.ipc)
        self.total = cfg.iterations
        check_window_count(cfg.windows_per_iteration)
        self.dsa = DSA(run.dsa_strategy, spatial_dims=dataset.spatial_dims) if cfg.dsa else None
        self.dsa_strategy = run.dsa_strategy if cfg.dsa else "none"
        self.model = build_model_for(spec, dataset, seed=0).to(device)
        self.problem = StudentProblem(self.model, self.dsa)
        self.exclude = frozen_mask(self.model).to(device) if cfg.exclude_frozen else None
        # The class an image was made for never changes (soft labels may drift).
        self.hard_labels = class_layout(dataset.num_classes, self.ipc, device)
        self.foundation = foundation_mask(self.hard_labels, dataset.num_classes)
        self.trainable = self._check_trainable(parts.trainable)

    def _check_trainable(self, trainable: torch.Tensor | None) -> torch.Tensor | None:
        num_images = self.hard_labels.shape[0]
        if trainable is not None and tuple(trainable.shape) != (num_images,):
            raise ConfigError(
                f"trainable mask has shape {tuple(trainable.shape)}; expected ({num_images},), "
                "one flag per synthetic image (class by class)"
            )
        return trainable.to(self.device, torch.bool) if trainable is not None else None

    # Initialisation -------------------------------------------------------------------
    def expert_logits(self, images: torch.Tensor, epoch: int) -> torch.Tensor:
        """Logits of the first expert at `epoch` (-1: its last) on `images`."""
        epoch = self.store.epochs if epoch < 0 else epoch
        theta = self.store.load(self.store.expert_ids[0], epoch, device=self.device)
        with torch.no_grad():
            return torch.cat(
                [
                    functional_forward(self.model, theta, chunk, layout=self.problem.layout)
                    for chunk in images.split(256)
                ]
            )

    def _correct_candidates(self) -> list[torch.Tensor]:
        """DATM's init: per class, the train images the expert classifies correctly (all of
        the class when fewer than ipc are)."""
        out = []
        for c, idx in enumerate(self.dataset.class_indices("train")):
            images = self.dataset.train.images[idx].to(self.device)
            pred = self.expert_logits(images, self.parts.labels.expert_epoch).argmax(dim=1)
            correct = idx[(pred == c).to(idx.device)]
            out.append(correct if correct.numel() >= self.cfg.ipc else idx)
        return out

    def initial_images(self, generator: torch.Generator) -> torch.Tensor:
        """ipc real train images per class drawn with `generator` (or noise of that shape).
        On a DP buffer: noise drawn without touching the train split (not even its class
        sizes, which the real draw before the noise would consume)."""
        init = self.cfg.init
        if self.private:
            shape = (self.dataset.num_classes * self.cfg.ipc, *self.dataset.image_shape)
            return torch.randn(shape, generator=generator).to(self.device)
        pool = self._correct_candidates() if init == "real_correct" else None
        images, _ = real_per_class(self.dataset, self.cfg.ipc, generator, pool)
        images = images.to(self.device)
        if init == "noise":
            images = torch.randn(images.shape, generator=generator).to(self.device)
        return images

    def initial_state(self) -> DistillState:
        """Images (real, real-correct, noise or rendered), labels of the label mode."""
        gen = make_generator(derive_seed(self.run.seed, "init"))
        params: dict[str, torch.Tensor] = {}
        if self.param is not None and not self.encodes:  # HaBa: its own initialisation
            params = {k: v.to(self.device) for k, v in self.param.initial_tensors().items()}
        else:
            images = self.initial_images(gen)
            if self.param is not None:  # dct, latent: the drawn images, encoded
                params = self.param.encode(images)
        if params:
            with torch.no_grad():
                images = self.param.render(params).detach()
        labels = self.parts.labels.initial(self.hard_labels, images, self.expert_logits)
        lr0 = torch.tensor(self.cfg.syn_lr_init, dtype=torch.float32, device=self.device)
        state = DistillState(
            iteration=0,
            images=images,
            lr_param=torch.log(lr0) if self.cfg.step_size_param == "log" else lr0,
            labels=labels,
            momentum_images=torch.zeros_like(images),
            momentum_lr=torch.zeros_like(lr0),
            momentum_labels=torch.zeros_like(labels) if self.parts.labels.soft else None,
            params=params,
            momentum_params={k: torch.zeros_like(v) for k, v in params.items()},
        )
        for hook in self.parts.hooks:
            hook.start(state)
        return state

    # One iteration --------------------------------------------------------------------
    def syn_lr(self, state: DistillState) -> torch.Tensor:
        p = state.lr_param
        return torch.exp(p) if self.cfg.step_size_param == "log" else p

    def _match(
        self, state: DistillState, ctx: MatchContext, syn_steps: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, Any]:
        """Unroll the student and return (L, its gradients), through the method's parts."""
        parts = self.parts
        plans = plan_steps(
            state.images.shape[0], syn_steps, self.cfg.batch_syn or state.images.shape[0],
            generator, self.dsa, self.device,
        )  # fmt: skip

        def select(states: list[torch.Tensor]) -> list[int]:
            k = parts.step_choice(states, ctx.theta_target)
            ctx.record["k"] = k
            for element_mask in parts.masks:
                keep = element_mask(states[k], ctx)
                ctx.mask = keep if ctx.mask is None else keep & ctx.mask
            if ctx.mask is not None:
                ctx.record["util"] = float(ctx.mask.float().mean())
            return sorted(set().union(*(term.steps(k) for term in parts.terms)))

        def loss_of(states: dict[int, torch.Tensor]) -> torch.Tensor:
            k = int(ctx.record["k"])
            total: torch.Tensor | None = None
            for term in parts.terms:
                value = term(states, k, ctx)
                ctx.record[term.name] = float(value.detach())
                total = term.weight * value if total is None else total + term.weight * value
            assert total is not None
            return total

        loss, grads, _ = student_gradients(
            self.problem, ctx.theta_start, state.images, state.labels, self.syn_lr(state),
            plans, select, loss_of, mode=self.cfg.gradient_mode,
        )  # fmt: skip
        return loss, grads

    def step(self, state: DistillState, generator: torch.Generator) -> IterationLog:
        """One distillation iteration, updating `state` in place."""
        t0 = time.perf_counter()
        it = state.iteration
        rendered, leaves = self._render(state)
        if self.cfg.windows_per_iteration == 1:  # the papers' loop: the run's own generator
            window = self._draw(it, generator)
            one = self._window(state, state, window, generator)
            loss, grads, record = one.loss, one.grads, one.record
        else:
            window, merged = self._windows(state)
            loss, grads, record = merged.loss, merged.grads, merged.record
        grad_images, image_values = self._image_terms(state, grads.images)
        for term in self.parts.image_terms:
            loss = loss + term.weight * image_values[term.name]
        loss_value = float(loss)
        self._check_finite(loss_value, grad_images, it, window)
        skipped = 0 < self.parts.skip_above < loss_value
        if not skipped:
            grad_params = self._pull_back(rendered, leaves, grad_images)
            self._update(state, grad_images, grads, grad_params)
        for hook in self.parts.hooks:
            hook.after_update(state, it, self.run.log)
        if self.encodes and self.parts.hooks:  # a hook may have reset coefficients (PTM)
            with torch.no_grad():
                state.images = self.param.render(state.params).detach()
        state.iteration = it + 1
        return IterationLog(
            iteration=it, loss=loss_value, match_loss=record["match"],
            shape_loss=record["shape"], overlap_loss=float(image_values.get("overlap", 0.0)),
            mask_utilisation=record["util"], kappa=record["kappa"],
            syn_lr=float(self.syn_lr(state)), expert=window.expert, start=window.start,
            end=window.end, syn_steps=window.syn_steps, matched_step=int(record["k"]),
            skipped=skipped, seconds=round(time.perf_counter() - t0, 4),
        )  # fmt: skip

    def _draw(self, it: int, generator: torch.Generator) -> Window:
        return sample_window(
            it, self.parts.windows, self.store.expert_ids, self.store.epochs, generator
        )

    def _window(
        self, state: DistillState, view: Any, window: Window, generator: torch.Generator
    ) -> WindowResult:
        """Unroll the student on one expert window; the parts write matching state to `view`."""
        theta = self.store.load_many(
            window.expert, [window.start, window.mid, window.end], device=self.device
        )
        ctx = MatchContext(state.iteration, *theta, state=view, exclude=self.exclude)
        ctx.record.update({"match": 0.0, "shape": 0.0, "util": 1.0, "kappa": 0.0})
        loss, grads = self._match(state, ctx, window.syn_steps, generator)
        return WindowResult(loss, grads, ctx.record, view)

    def _windows(self, state: DistillState) -> tuple[Window, Merged]:
        """match.windows_per_iteration windows, this rank's block unrolled here, all of them
        merged in window order (matching/windows.py); returns window 0 (for the log) too."""
        it, count = state.iteration, self.cfg.windows_per_iteration
        gens = [make_generator(derive_seed(self.run.seed, "window", it, w)) for w in range(count)]
        windows = [self._draw(it, gen) for gen in gens]
        mine = [
            self._window(state, state_view(state), windows[w], gens[w])
            for w in distributed.block(count)
        ]
        return windows[0], merge(mine, state, count)

    def _render(self, state: DistillState) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """With a parameterisation, images = render(tensors), differentiable in the tensors."""
        if self.param is None:
            return None, {}
        leaves = {k: v.detach().requires_grad_(True) for k, v in state.params.items()}
        rendered = self.param.render(leaves)
        state.images = rendered.detach()
        return rendered, leaves

    def _image_terms(
        self, state: DistillState, grad_images: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Add the image terms' gradients (PTM's overlap) and zero frozen images' (SeqMatch)."""
        values = {}
        for term in self.parts.image_terms:
            value, grad = term.gradient(state.images, self.hard_labels, self.foundation)
            grad_images = grad_images + grad
            values[term.name] = value
        if self.trainable is not None:
            keep = self.trainable.view(-1, *([1] * (grad_images.dim() - 1)))
            grad_images = torch.where(keep, grad_images, torch.zeros_like(grad_images))
        return grad_images, values

    def _check_finite(self, loss: float, grad_images: torch.Tensor, it: int, window: Any) -> None:
        if math.isfinite(loss) and bool(torch.isfinite(grad_images).all()):
            return
        what = (
            f"loss became {loss}"
            if not math.isfinite(loss)
            else f"the image gradient became non-finite (loss {loss:.4g})"
        )
        raise NumericalError(
            f"{what} at iteration {it} (window {window.start}->{window.end} of expert "
            f"{window.expert}); lower lr_img or lr_lr, or use step_size_param=log; the last "
            "good checkpoint is kept"
        )

    def _pull_back(
        self,
        rendered: torch.Tensor | None,
        leaves: dict[str, torch.Tensor],
        grad_images: torch.Tensor,
    ) -> dict[str, torch.Tensor] | None:
        """dL/dimages pulled back to the parameterisation's tensors (None for pixels)."""
        if rendered is None:
            return None
        names = list(leaves)
        parts = torch.autograd.grad(
            rendered, [leaves[k] for k in names], grad_outputs=grad_images, allow_unused=True
        )
        return {
            k: g if g is not None else torch.zeros_like(leaves[k])
            for k, g in zip(names, parts, strict=True)
        }

    def _update(
        self,
        state: DistillState,
        grad_images: torch.Tensor,
        grads: Any,
        grad_params: dict[str, torch.Tensor] | None,
    ) -> None:
        """SGD with momentum (torch.optim.SGD's rule: buf = m*buf + g; p -= lr*buf)."""
        cfg = self.cfg
        syn_lr = self.syn_lr(state)
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
            g_lr = grads.syn_lr.reshape(())
            if cfg.step_size_param == "log":
                g_lr = g_lr * syn_lr  # chain rule through alpha = exp(rho)
            state.momentum_lr.mul_(cfg.momentum_lr).add_(g_lr)
            state.lr_param.sub_(cfg.lr_lr * state.momentum_lr)
            self.parts.labels.update(state, grads.labels)
        if cfg.step_size_param == "linear" and not float(state.lr_param) > 0:
            raise NumericalError(
                f"the learned step size became {float(state.lr_param):.3g} (non-positive) at "
                f"iteration {state.iteration}; lower lr_lr (now {cfg.lr_lr}) or use "
                "step_size_param=log; the last good checkpoint is kept"
            )

    # The run ---------------------------------------------------------------------------
    def position(self, state: DistillState) -> int:
        return state.iteration

    def advance(self, state: DistillState, generator: torch.Generator) -> dict[str, str]:
        entry = self.step(state, generator)
        if entry.iteration % self.cfg.log_every == 0:
            self.run.on_metric({"stage": "distill", **entry.__dict__})
        done, every = state.iteration, self.cfg.snapshot_every
        writes = self.run.out_dir is not None and distributed.is_main()
        if every and writes and (done % every == 0 or done == 1):
            save_snapshot(self.run.out_dir, done, state.images, self.hard_labels)
        return {"loss": f"{entry.loss:.4f}", "lr": f"{entry.syn_lr:.2e}",
                "win": f"{entry.start}-{entry.end}"}  # fmt: skip

    def checkpoint_meta(self) -> dict[str, Any]:
        config = to_dict(self.cfg)
        if config["windows_per_iteration"] == 1:  # checkpoints from before the option resume
            del config["windows_per_iteration"]
        meta = {
            "config": config,
            "seed": self.run.seed,
            "spec": to_dict(self.spec),
            "buffer_id": self.store.buffer_id,
            "source_id": self.dataset.source_id,
            "method": self.run.method,
            "dsa_strategy": self.dsa_strategy,
        }
        if self.param is not None:
            meta["parameterization"] = self.param.describe()
        return meta

    def load_state(self, path: Path) -> tuple[DistillState, dict]:
        return DistillState.load(path, self.device)

    def save_state(self, state: DistillState, generator: torch.Generator, path: Path) -> None:
        state.generator_state = generator.get_state()
        state.save(path, self.checkpoint_meta())

    def run_all(self) -> SyntheticSet:
        """Iterate to cfg.iterations (resuming from the run folder's checkpoint)."""
        return self.execute(self.cfg.eval_every, self.cfg.checkpoint_every)

    def synthetic_set(self, state: DistillState) -> SyntheticSet:
        """The shareable result: EMA images when an EMA is kept (FTD, ATT), labels as the label
        mode shares them (soft labels: softmax of the learned logits)."""
        images = state.ema if state.ema is not None else state.images
        labels = self.parts.labels.shareable(state.labels)
        codes = {}  # dct / latent: the codes (their EMA when one is shared) and their render
        if self.encodes:
            learned = state.ema if state.ema is not None else state.params[PER_IMAGE]
            codes = {PER_IMAGE: learned.detach().cpu().clone()}
            with torch.no_grad():
                images = self.param.render({PER_IMAGE: learned})
        return SyntheticSet(
            images=images.detach().cpu().clone(),
            labels=labels.detach().cpu().clone(),
            normalization=self.dataset.normalization,
            class_names=list(self.dataset.class_names),
            dataset=self.dataset.name,
            source_id=self.dataset.source_id,
            syn_lr=float(self.syn_lr(state)),
            meta={**self.checkpoint_meta(), "iteration": state.iteration},
            codes=codes,
        )
