"""The one loop every gradient- and distribution-matching method configures (DC, DSA, DM, IDM,
CAFE): no expert trajectories, a loss on the synthetic images that a method supplies.

Per step: the method's `Objective.loss(images, labels, real, generator, step)` is evaluated on
a fresh leaf copy of the images, its gradient updates the images with SGD + momentum
(torch.optim.SGD's rule, explicit state), then `Objective.after_update` runs (DC/CAFE train
their network on the new synthetic set; IDM trains its queue of networks on real data).

A step is one image update. Methods with an outer loop (DC, DSA, CAFE) take `outer_loop` steps
per iteration of their paper, so `iterations` keeps the paper's meaning and the run makes
`iterations * objective.steps_per_iteration` updates.

Resumable like the trajectory engine: every `checkpoint_every` steps the images, momentum,
generator and the objective's own state (its networks) go into ONE safetensors file, written
atomically; a re-run with the same config continues from it and ends with exactly the same
synthetic set as an uninterrupted run.
"""

from __future__ import annotations

import abc
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from meddistill.augment.dsa import DEFAULT_STRATEGY, DSA
from meddistill.config import to_dict
from meddistill.data.dataset import MedicalDataset, Split
from meddistill.data.draws import check_ipc, draw_per_class, real_per_class
from meddistill.data.synthetic import SyntheticSet
from meddistill.errors import ArtifactError, ConfigError, NumericalError
from meddistill.matching.config import LatentConfig
from meddistill.matching.loop import DistillLoop, DistillRun
from meddistill.matching.parameterizations import PER_IMAGE, build_parameterization
from meddistill.models import ModelSpec, build_model
from meddistill.training.config import TrainConfig
from meddistill.training.evaluate import EvalConfig
from meddistill.training.loop import train_network
from meddistill.utils import atomic_path, derive_seed, make_generator


@dataclass
class ObjectiveConfig:
    """Knobs every objective method shares; each method subclasses it with its own."""

    ipc: int = 10
    iterations: int = 1000  # iterations of the paper (steps = iterations * steps_per_iteration)
    init: Literal["real", "noise"] = "real"
    # How the images are stored and learned (matching.parameterizations): pixels, their
    # dct_keep lowest DCT frequencies per spatial axis (0: half the smallest side), or the
    # codes of an autoencoder (latent)
    parameterization: Literal["pixel", "dct", "latent"] = "pixel"
    dct_keep: int = 0
    latent: LatentConfig = field(default_factory=LatentConfig)  # the autoencoder of `latent`
    budget_ipc: int = 0  # > 0: ipc from the storage of this many pixel images per class
    lr_img: float = 0.1
    momentum_img: float = 0.5
    lr_img_decay_at: list[int] = field(default_factory=list)  # iterations where lr_img halves
    batch_real: int = 256  # real images per class per step
    dsa: bool = True
    dsa_strategy: str | None = None  # None: the strategy the caller passes (dataset default)
    syn_lr: float = 0.01  # the evaluation lr the method prescribes (stored with the set)
    eval_every: int = 0  # steps between periodic evaluations (0: only at the end)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(num_nets=2, epochs=300))
    checkpoint_every: int = 100  # steps
    log_every: int = 1  # steps

    def __post_init__(self) -> None:
        for key in ("ipc", "iterations", "batch_real", "checkpoint_every", "log_every"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"option {key} must be >= 1, got {value}")
        for key in ("lr_img", "syn_lr"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"option {key} must be a positive number, got {value}")
        if not 0.0 <= self.momentum_img < 1.0:
            raise ConfigError(f"option momentum_img must be in [0, 1), got {self.momentum_img}")
        if any(m < 0 for m in self.lr_img_decay_at):
            raise ConfigError(
                f"option lr_img_decay_at must hold iterations >= 0, got {self.lr_img_decay_at}"
            )
        if self.eval_every < 0:
            raise ConfigError(f"option eval_every must be >= 0, got {self.eval_every}")
        if self.budget_ipc < 0:
            raise ConfigError(f"option budget_ipc must be >= 0 (0: off), got {self.budget_ipc}")
        if self.dct_keep < 0:
            raise ConfigError(
                f"option dct_keep must be >= 0 (0: half the side), got {self.dct_keep}"
            )


# Real data ------------------------------------------------------------------------------
class RealSampler:
    """Random real images of one class (or of all classes), drawn from an explicit generator.

    Like the references' get_images(c, n): a random subset without replacement, all of the
    class when it has fewer than n images. Indices are drawn on the CPU (device-independent
    results) and the images never leave their device.
    """

    def __init__(self, split: Split, num_classes: int) -> None:
        self.images = split.images
        self.labels = split.labels
        self.per_class = [
            torch.nonzero(split.labels == c, as_tuple=False).flatten() for c in range(num_classes)
        ]

    def __call__(self, c: int, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.images.index_select(
            0, draw_per_class([self.per_class[c]], n, generator)
        ).float()

    def mixed(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random images of the whole split with their labels (IDM's network training)."""
        perm = torch.randperm(self.labels.shape[0], generator=generator)[:n]
        perm = perm.to(self.labels.device)
        return self.images.index_select(0, perm).float(), self.labels.index_select(0, perm)


# What objectives share ------------------------------------------------------------------------
@torch.no_grad()
def sgd_momentum_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor],
    lr: float,
    momentum: float,
    weight_decay: float = 0.0,
) -> None:
    """torch.optim.SGD's step with explicit (checkpointable) buffers, zero-initialised:
    d = g + wd * p; buf = momentum * buf + d; p -= lr * buf."""
    for p, g, buf in zip(params, grads, buffers, strict=True):
        d = g.add(p, alpha=weight_decay) if weight_decay else g
        buf.mul_(momentum).add_(d)
        p.sub_(buf, alpha=lr)


def draw_seed(generator: torch.Generator) -> int:
    """A network seed drawn from the run's generator (fresh networks stay reproducible)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


@dataclass
class ObjectiveContext:
    """What an objective needs to know about the run: shapes, network, device, augmentation."""

    spec: ModelSpec
    in_channels: int
    num_classes: int
    image_size: int
    spatial_dims: int
    ipc: int
    device: torch.device
    dsa: DSA | None

    def new_network(self, generator: torch.Generator) -> nn.Module:
        """A randomly initialised network of the run's architecture, seeded from `generator`."""
        return self.build(draw_seed(generator))

    def build(self, seed: int) -> nn.Module:
        return build_model(
            self.spec,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            image_size=self.image_size,
            spatial_dims=self.spatial_dims,
            seed=seed,
            device=self.device,
        )

    def class_slice(self, c: int) -> slice:
        """Where class c's synthetic images sit (laid out class by class, ipc each)."""
        return slice(c * self.ipc, (c + 1) * self.ipc)

    def siamese(
        self, real: torch.Tensor, syn: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One shared DSA draw applied to the real and the synthetic batch (DC/DSA/DM/IDM)."""
        if self.dsa is None or self.dsa.is_identity:
            return real, syn
        draw = self.dsa.sample(0, generator, shared=True, device=real.device)
        return self.dsa.apply(real, draw), self.dsa.apply(syn, draw)


class Objective(abc.ABC):
    """What a method supplies: a loss on the synthetic images, plus optional state.

    `metrics` holds the parts of the last loss (floats) for the per-step log.
    """

    steps_per_iteration: int = 1

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    @abc.abstractmethod
    def loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealSampler,
        generator: torch.Generator,
        step: int,
    ) -> torch.Tensor:
        """A scalar, differentiable in `images` (a leaf that requires grad)."""

    def after_update(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealSampler,
        generator: torch.Generator,
        step: int,
    ) -> None:
        """Runs after the image update of `step` (train networks here); nothing by default."""
        return None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume exactly (networks, optimiser buffers), by name."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what `state_tensors` returned; nothing to restore by default."""
        return None

    def decode(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images a network trains on (IDM's multi-formation expands them)."""
        return images, labels

    def initial_images(
        self, dataset: MedicalDataset, cfg: Any, generator: torch.Generator
    ) -> torch.Tensor | None:
        """Initial stored images when the method packs them (IDM), drawn from `generator`;
        None: the default init."""
        return None


ObjectiveBuilder = Callable[[Any, ObjectiveContext], Objective]


# IPC -> (outer_loop, inner_loop) of the DC reference code (CAFE imports the same table).
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loops_for_ipc(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) of the reference table; the nearest listed IPC otherwise."""
    key = min(LOOPS, key=lambda k: (abs(k - ipc), k))
    return LOOPS[key]


@dataclass
class InnerLoopConfig(ObjectiveConfig):
    """Knobs of the inner-loop network (DC, DSA, CAFE); loops 0 take the table by IPC."""

    outer_loop: int = 0
    inner_loop: int = 0
    lr_net: float = 0.01
    batch_train: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("outer_loop", "inner_loop"):
            value = getattr(self, key)
            if value < 0:
                raise ConfigError(f"option {key} must be >= 0 (0: by IPC), got {value}")
        if not self.lr_net > 0:
            raise ConfigError(f"option lr_net must be > 0, got {self.lr_net}")
        if self.batch_train < 1:
            raise ConfigError(f"option batch_train must be >= 1, got {self.batch_train}")

    def loops(self) -> tuple[int, int]:
        outer, inner = loops_for_ipc(self.ipc)
        return (self.outer_loop or outer, self.inner_loop or inner)


class InnerLoopNetwork:
    """The network of DC, DSA and CAFE: re-initialised at the start of every iteration and
    trained on the synthetic set between its outer-loop steps (`inner_loop` epochs of SGD,
    lr_net, no momentum, batches of batch_train; DSA per sample when the method augments).
    """

    def __init__(self, cfg: InnerLoopConfig, ctx: ObjectiveContext) -> None:
        self.ctx = ctx
        self.outer_loop, self.inner_loop = cfg.loops()
        dsa_strategy = ctx.dsa.strategy if ctx.dsa is not None else None
        self.train_cfg = TrainConfig(
            epochs=self.inner_loop,
            lr=cfg.lr_net,
            momentum=0.0,
            weight_decay=0.0,
            batch_size=cfg.batch_train,
            lr_schedule="none",
            dsa=dsa_strategy is not None,
            dsa_strategy=dsa_strategy or DEFAULT_STRATEGY,
        )
        self.model: nn.Module | None = None

    def at(self, step: int, generator: torch.Generator) -> nn.Module:
        """The network for `step`: a fresh one at the first outer step of an iteration."""
        if step % self.outer_loop == 0 or self.model is None:
            self.model = self.ctx.new_network(generator)
        self.model.train()
        return self.model

    def after_update(
        self, images: torch.Tensor, labels: torch.Tensor, step: int, generator: torch.Generator
    ) -> None:
        """Train on the updated set, except after the last outer step (the net is dropped)."""
        if self.model is None or step % self.outer_loop == self.outer_loop - 1:
            return
        train_network(
            self.model, images.detach(), labels, self.train_cfg, generator=generator, progress=False
        )

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.model is None:
            return {}
        return {f"net.{k}": v for k, v in self.model.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        own = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        if own:
            self.model = self.ctx.build(0)
            self.model.load_state_dict(own)


class InnerLoopObjective(Objective):
    """An objective with a network trained in an inner loop on the synthetic set (DC, DSA,
    CAFE): the network steps after each image update and is part of the checkpoint."""

    net: InnerLoopNetwork

    def after_update(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealSampler,
        generator: torch.Generator,
        step: int,
    ) -> None:
        self.net.after_update(images, labels, step, generator)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.net.state_tensors()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.net.load_state_tensors(tensors)


# Checkpoint ---------------------------------------------------------------------------------
@dataclass
class ObjectiveState:
    """The mutable state between two steps; saved as ONE safetensors file.

    A sibling of matching.state.DistillState (which is shaped for trajectory matching: step
    size, labels, masks) holding named objective tensors instead.
    """

    step: int
    images: torch.Tensor
    momentum: torch.Tensor
    generator_state: torch.Tensor | None = None
    objective: dict[str, torch.Tensor] = field(default_factory=dict)

    def save(self, path: str | Path, meta: dict[str, Any]) -> None:
        """Write atomically; `meta` (config, ids) goes into the file's header."""
        tensors = {"images": self.images, "momentum": self.momentum}
        if self.generator_state is not None:
            tensors["generator_state"] = self.generator_state
        tensors.update({f"objective.{k}": v for k, v in self.objective.items()})
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        header = {"step": str(self.step), "meta": json.dumps(meta, default=str)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)

    @classmethod
    def load(cls, path: str | Path, device: torch.device) -> tuple[ObjectiveState, dict]:
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
            t = load_file(str(path))
            step = int(header["step"])
            meta = json.loads(header.get("meta", "{}"))
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise ArtifactError(
                f"checkpoint {path} is unreadable ({exc}); delete it to restart the run"
            ) from exc
        prefix = "objective."
        return (
            cls(
                step=step,
                images=t["images"].to(device),
                momentum=t["momentum"].to(device),
                generator_state=t.get("generator_state"),
                objective={
                    k[len(prefix) :]: v.to(device) for k, v in t.items() if k.startswith(prefix)
                },
            ),
            meta,
        )


# The loop -------------------------------------------------------------------------------------
@dataclass
class StepLog:
    """What one step reports (the per-step log of the run)."""

    iteration: int  # the step (one image update)
    loss: float
    lr_img: float
    seconds: float
    parts: dict[str, float]


class ObjectiveDistiller(DistillLoop[ObjectiveState]):
    """Runs one objective distillation: `execute()` returns the synthetic set."""

    unit = "step"
    noun = "step"

    def __init__(
        self,
        cfg: ObjectiveConfig,
        dataset: MedicalDataset,
        spec: ModelSpec,
        build: ObjectiveBuilder,
        *,
        device: torch.device,
        run: DistillRun,
    ) -> None:
        check_ipc(dataset, cfg.ipc)
        self.cfg, self.dataset, self.spec, self.device, self.run = cfg, dataset, spec, device, run
        self.dsa_strategy = run.dsa_strategy if cfg.dsa else "none"
        dsa = DSA(run.dsa_strategy, spatial_dims=dataset.spatial_dims) if cfg.dsa else None
        self.ctx = ObjectiveContext(
            spec=spec,
            in_channels=dataset.channels,
            num_classes=dataset.num_classes,
            image_size=dataset.image_size,
            spatial_dims=dataset.spatial_dims,
            ipc=cfg.ipc,
            device=device,
            dsa=dsa,
        )
        self.objective = build(cfg, self.ctx)
        # dct, latent: state.images holds the stored images' codes; the loss sees them rendered
        self.param = build_parameterization(
            cfg.parameterization, cfg.dct_keep, dataset.image_shape, cfg.ipc, run.autoencoder
        )
        self.real = RealSampler(dataset.train, dataset.num_classes)
        self.labels = torch.arange(dataset.num_classes, device=device).repeat_interleave(cfg.ipc)
        self.total = cfg.iterations * self.objective.steps_per_iteration

    def initial_state(self) -> ObjectiveState:
        """Images from real samples per class (or noise); the objective may re-pack them."""
        gen = make_generator(derive_seed(self.run.seed, "init"))
        images = self.objective.initial_images(self.dataset, self.cfg, gen)
        if images is None:
            images, _ = real_per_class(self.dataset, self.cfg.ipc, gen)
            images = images.to(self.device)
            if self.cfg.init == "noise":
                images = torch.randn(images.shape, generator=gen).to(self.device)
        if self.param is not None:
            images = self.param.encode(images)[PER_IMAGE]
        return ObjectiveState(step=0, images=images, momentum=torch.zeros_like(images))

    def rendered(self, learned: torch.Tensor) -> torch.Tensor:
        """The stored images from the learned tensor (itself for pixels)."""
        return learned if self.param is None else self.param.render({PER_IMAGE: learned})

    def lr_at(self, step: int) -> float:
        """lr_img, halved at each of lr_img_decay_at (counted in iterations, as CAFE)."""
        it = step // self.objective.steps_per_iteration
        return self.cfg.lr_img * 0.5 ** sum(1 for m in self.cfg.lr_img_decay_at if it >= m)

    def step(self, state: ObjectiveState, generator: torch.Generator) -> StepLog:
        """One image update, in place."""
        t0 = time.perf_counter()
        s = state.step
        x = state.images.detach().requires_grad_(True)
        self.objective.metrics = {}
        loss = self.objective.loss(self.rendered(x), self.labels, self.real, generator, s)
        value = float(loss.detach())
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        if not math.isfinite(value) or not bool(torch.isfinite(grad).all()):
            raise NumericalError(
                f"{self.run.method} loss became {value} at step {s}; lower lr_img (now "
                f"{self.cfg.lr_img}); the last good checkpoint is kept"
            )
        lr = self.lr_at(s)
        sgd_momentum_([state.images], [grad], [state.momentum], lr, self.cfg.momentum_img)
        images = self.rendered(state.images).detach()
        self.objective.after_update(images, self.labels, self.real, generator, s)
        state.step = s + 1
        return StepLog(
            s, value, lr, round(time.perf_counter() - t0, 4), dict(self.objective.metrics)
        )

    def position(self, state: ObjectiveState) -> int:
        return state.step

    def advance(self, state: ObjectiveState, generator: torch.Generator) -> dict[str, str]:
        entry = self.step(state, generator)
        if entry.iteration % self.cfg.log_every == 0:
            self.run.on_metric(
                {"stage": "distill", "iteration": entry.iteration, "loss": entry.loss,
                 "lr_img": entry.lr_img, "seconds": entry.seconds, **entry.parts}
            )  # fmt: skip
        return {"loss": f"{entry.loss:.4f}"}

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "config": to_dict(self.cfg),
            "seed": self.run.seed,
            "spec": to_dict(self.spec),
            "source_id": self.dataset.source_id,
            "method": self.run.method,
            "dsa_strategy": self.dsa_strategy,
        }

    def load_state(self, path: Path) -> tuple[ObjectiveState, dict]:
        return ObjectiveState.load(path, self.device)

    def resumed(self, state: ObjectiveState) -> None:
        self.objective.load_state_tensors(state.objective)

    def save_state(self, state: ObjectiveState, generator: torch.Generator, path: Path) -> None:
        state.generator_state = generator.get_state()
        state.objective = self.objective.state_tensors()
        state.save(path, self.checkpoint_meta())

    def run_all(self) -> SyntheticSet:
        """Step to iterations * steps_per_iteration (resuming from the run folder)."""
        return self.execute(self.cfg.eval_every, self.cfg.checkpoint_every)

    def synthetic_set(self, state: ObjectiveState) -> SyntheticSet:
        """The shareable set (decoded by the objective: IDM's multi-formation expands it)."""
        images, labels = self.objective.decode(self.rendered(state.images.detach()), self.labels)
        codes = {} if self.param is None else {PER_IMAGE: state.images.detach().cpu().clone()}
        return SyntheticSet(
            images=images.detach().cpu().clone(),
            labels=labels.detach().cpu().clone(),
            normalization=self.dataset.normalization,
            class_names=list(self.dataset.class_names),
            dataset=self.dataset.name,
            source_id=self.dataset.source_id,
            syn_lr=float(self.cfg.syn_lr),
            meta={
                **self.checkpoint_meta(),
                "iteration": state.step,
                "stored_images": int(state.images.shape[0]),
                **({} if self.param is None else {"parameterization": self.param.describe()}),
            },
            codes=codes,
        )
