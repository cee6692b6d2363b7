"""The knobs every trajectory-matching method shares; each method extends them with its own.

A method's config (meddistill.methods.<name>) subclasses TrajectoryConfig, adds only its
paper's knobs and sets its published defaults. Names follow the reference scripts (syn_steps,
expert_epochs, min_start/max_start, lr_img, lr_lr, batch_syn) so published tables map directly.
The seed is not a knob of the method: it is the run's (one `seed` key per job).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from meddistill.errors import ConfigError
from meddistill.training.evaluate import EvalConfig
from meddistill.utils import Options, is_integer

SECTION = "match"  # where a job holds the method's options
# What 0 iterations give: DD-Ranking's random baseline under the method's own evaluation
UNMATCHED = "0: the initial set, unmatched (real images labelled as the method labels them)"


@dataclass
class LatentConfig:
    """The autoencoder of match.parameterization=latent (match.latent.*): code channels
    (0: the image's), spatial downsampling factor, width, and its training; `path`: an
    existing autoencoder folder instead of training one."""

    channels: int = 0
    downsample: int = 2
    width: int = 32
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    path: str | None = None

    def __post_init__(self) -> None:
        check = Options(f"{SECTION}.latent", self)
        check.counts("downsample", "width", "epochs", "batch_size")
        check.counts("channels", minimum=0, zero="0: the image's channels")
        check.positive("lr")
        check.seeds("seed")

    def identity(self, source_id: str) -> dict[str, Any]:
        """What the trained weights depend on (not where they are kept)."""
        settings = {k: v for k, v in asdict(self).items() if k != "path"}
        return {"kind": "autoencoder", "source_id": source_id, **settings}


@dataclass
class TrajectoryConfig:
    """Budget, window, student, optimiser and bookkeeping of one trajectory distillation."""

    # Budget and run length
    ipc: int = 10
    iterations: int = 500
    # Window on the expert trajectory (MTT: start ~ U[min_start, max_start), target +M epochs)
    syn_steps: int = 20
    expert_epochs: int = 2
    min_start: int = 0
    max_start: int = 4
    # Student
    batch_syn: int = 0  # 0: all synthetic images in every step
    gradient_mode: Literal["adjoint", "unroll"] = "adjoint"
    # Windows per iteration, their gradients averaged (spread over torchrun's ranks; 1: the
    # papers' loop). The set depends on W, never on how many ranks computed it.
    windows_per_iteration: int = 1
    dsa: bool = True
    dsa_strategy: str | None = None  # None: the dataset's default strategy
    # Initialisation
    init: Literal["real", "real_correct", "noise"] = "real"
    # How an image is stored and learned (matching.parameterizations): its pixels, its
    # dct_keep lowest DCT frequencies per spatial axis (FreD; 0: half the smallest side), or
    # its code of an autoencoder (latent)
    parameterization: Literal["pixel", "dct", "latent"] = "pixel"
    dct_keep: int = 0
    latent: LatentConfig = field(default_factory=LatentConfig)  # the autoencoder of `latent`
    budget_ipc: int = 0  # > 0: ipc from the storage of this many pixel images per class
    # Labels (DATM's learned soft labels, TESLA's fixed ones, or class indices): an option of
    # every trajectory method, so a gain from labels can be told from a gain from images
    soft_labels: bool = False
    learn_labels: bool = True
    lr_y: float = 2.0
    momentum_y: float = 0.9
    label_expert_epoch: int = -1  # expert epoch whose logits give the labels (-1: last)
    # Optimisers (SGD with momentum, as the references)
    lr_img: float = 1000.0
    momentum_img: float = 0.5
    syn_lr_init: float = 0.01
    lr_lr: float = 1e-5
    momentum_lr: float = 0.5
    step_size_param: Literal["linear", "log"] = "linear"
    exclude_frozen: bool = True  # leave out parameters that cannot move (bias before a norm)
    # Bookkeeping
    eval_every: int = 0  # 0: evaluate only at the end
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(num_nets=2, epochs=300))
    checkpoint_every: int = 25
    log_every: int = 1
    snapshot_every: int = 0  # save the images every k iterations (report: MMD over the run)

    def __post_init__(self) -> None:
        check = Options(SECTION, self)
        check.counts("ipc", "syn_steps", "expert_epochs", "max_start")
        check.counts("iterations", minimum=0, zero=UNMATCHED)
        check.counts("checkpoint_every", "log_every", "windows_per_iteration")
        check.counts("min_start", minimum=0)
        check.counts("batch_syn", minimum=0, zero="0: all images in every step")
        check.counts("eval_every", minimum=0, zero="0: evaluate only at the end")
        check.counts("snapshot_every", minimum=0, zero="0: no snapshots")
        check.positive("lr_img", "syn_lr_init")
        check.at_least("lr_lr", zero="0: the step size is not learned")
        check.fraction("momentum_img", "momentum_lr")
        check.strategy("dsa_strategy")
        check.positive("lr_y")
        check.fraction("momentum_y")
        check.counts("label_expert_epoch", minimum=-1, zero="-1: the last epoch")
        check.counts("dct_keep", minimum=0, zero="0: half the smallest side")
        check.counts("budget_ipc", minimum=0, zero="0: match.ipc is the image count")

    def check_start_range(self) -> None:
        """A random window needs a non-empty start range [min_start, max_start)."""
        if self.max_start <= self.min_start:
            raise ConfigError(
                f"start range [{SECTION}.min_start={self.min_start}, {SECTION}.max_start="
                f"{self.max_start}) is empty; max_start must exceed min_start (the upper bound "
                "is exclusive)"
            )


# The label knobs every trajectory method gained after runs were recorded (before, only DATM
# and TESLA had them), at their TrajectoryConfig defaults: hard labels.
LATER_LABEL_OPTIONS = {
    "soft_labels": False, "learn_labels": True, "lr_y": 2.0, "momentum_y": 0.9,
    "label_expert_epoch": -1,
}  # fmt: skip


# The image parameterisation (issue 14), at its default: pixels.
LATER_IMAGE_OPTIONS = {
    "parameterization": "pixel", "dct_keep": 0, "budget_ipc": 0, "latent": asdict(LatentConfig()),
}  # fmt: skip


# Several windows per iteration (issue 15), at its default: the papers' one.
LATER_PARALLEL_OPTIONS = {"windows_per_iteration": 1}


def match_identity(match: dict[str, Any]) -> dict[str, Any]:
    """A match section as identities hash it: the label knobs left out while all are at
    their hard-label defaults, the parameterisation while it is pixels and the window count
    while it is 1, so runs recorded before those options existed keep their ids."""
    for later in (LATER_LABEL_OPTIONS, LATER_IMAGE_OPTIONS, LATER_PARALLEL_OPTIONS):
        if all(match.get(k, v) == v for k, v in later.items()):
            match = {k: v for k, v in match.items() if k not in later}
    return match


def check_unit_interval(name: str, value: float, *, closed_low: bool = True) -> None:
    """Refuse a fraction outside [0, 1) (or (0, 1) when closed_low is False)."""
    Options(SECTION, None).fraction_value(name, value, low_open=not closed_low)


def check_objective_options(cfg: Any) -> None:
    """The knobs of matching.objective.ObjectiveConfig (and InnerLoopConfig) named as the user
    types them (match.*); the objective methods' configs run it before their own checks."""
    check = Options(SECTION, cfg)
    check.counts("ipc", "iterations", "batch_real", "checkpoint_every", "log_every")
    check.counts("eval_every", minimum=0, zero="0: evaluate only at the end")
    check.positive("lr_img", "syn_lr")
    check.counts("dct_keep", minimum=0, zero="0: half the smallest side")
    check.counts("budget_ipc", minimum=0, zero="0: match.ipc is the image count")
    check.fraction("momentum_img")
    decays = cfg.lr_img_decay_at
    if not all(is_integer(m) and m >= 0 for m in decays):
        check.fail("lr_img_decay_at", "a list of iterations >= 0")
    check.strategy("dsa_strategy")
    if hasattr(cfg, "outer_loop"):
        check.counts("outer_loop", "inner_loop", minimum=0, zero="0: by IPC")
        check.positive("lr_net")
        check.counts("batch_train")
