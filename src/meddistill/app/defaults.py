"""Settings that follow from the data rather than from one dataset's preset (issue 12).

A method's published window (MTT's CIFAR defaults: start in [0, 25), 3 epochs long) assumes a
buffer of 50 epochs; on the short buffers a CPU or a small dataset gets, it reaches past the
last epoch and the run was refused. Here a window the user left at its default is fitted
into the buffer instead, and the run's log says so; a window the user set is never changed
(it is still refused when it does not fit, naming the knobs). Likewise, once the data is loaded
(fit_to_data), the student steps are capped at the expert's steps in its window and HoP-TM's
kappa_0 is made scale-free; and a learned step size far from its start is warned about.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection
from typing import Any

from meddistill.errors import ConfigError
from meddistill.matching.parameterizations import ipc_for_budget, stored_values
from meddistill.matching.schedule import check_schedule

WINDOW_KNOBS = ("expert_epochs", "max_start")


def _fits(windows_of: Callable[[Any], Any], config: Any, epochs: int) -> bool:
    try:
        check_schedule(windows_of(config), epochs)
    except ConfigError:
        return False
    return True


def fit_window(
    config: Any, windows_of: Callable[[Any], Any] | None, epochs: int, given: Collection[str]
) -> tuple[Any, str | None]:
    """(config, note): the default random window fitted into a buffer of `epochs` epochs,
    with a note saying what changed; unchanged (note None) when it fits, when the method has
    no random window, or when the user set expert_epochs or max_start."""
    if windows_of is None or not all(hasattr(config, k) for k in WINDOW_KNOBS):
        return config, None
    if any(k in given for k in WINDOW_KNOBS) or _fits(windows_of, config, epochs):
        return config, None
    length = max(1, min(config.expert_epochs, epochs // 5))
    start = max(config.min_start + 1, min(config.max_start, epochs - length + 1))
    fitted = dataclasses.replace(config, expert_epochs=length, max_start=start)
    if not _fits(windows_of, fitted, epochs):
        return config, None  # e.g. min_start set past the buffer: the check names it
    note = (
        f"the method's default window (match.expert_epochs={config.expert_epochs}, "
        f"match.max_start={config.max_start}) does not fit a buffer of {epochs} epochs; "
        f"using expert_epochs={length}, max_start={start} (set them to choose otherwise)"
    )
    return fitted, note


# A learned step size that ends outside [start / RANGE, start * RANGE] is worth a warning.
STEP_SIZE_RANGE = 10.0


def step_size_warning(start: float | None, learned: float | None) -> str | None:
    """A warning when the learned step size collapsed or exploded against its start value
    (the set is still evaluated with it, as the papers do), else None."""
    if not start or not learned or start <= 0 or learned <= 0:
        return None
    ratio = learned / start
    if 1 / STEP_SIZE_RANGE <= ratio <= STEP_SIZE_RANGE:
        return None
    went = "collapsed" if ratio < 1 else "grew"
    return (
        f"the learned step size {went} from {start:.4g} to {learned:.4g} ({ratio:.3g}x); the set "
        f"is evaluated with it. If that was not intended, lower match.lr_lr, use "
        f"match.step_size_param=log, or evaluate with a fixed eval.lr"
    )


# ---------------------------------------------------------------------------------------------
# Settings derived from the data: applied to the knobs nobody set (no preset, no override)
# ---------------------------------------------------------------------------------------------

KAPPA_KNOBS = ("kappa_mode", "kappa_base", "kappa_quantile")


def window_steps(expert_epochs: int, train_images: int, expert_batch: int) -> int:
    """SGD steps an expert takes over `expert_epochs` epochs (the last batch kept, as
    iter_batches does)."""
    return expert_epochs * max(1, math.ceil(train_images / expert_batch))


def _fewer_student_steps(
    config: Any, given: Collection[str], train_images: int, expert_batch: int
) -> tuple[Any, str | None]:
    """A student that takes more steps than the expert it matches overshoots the target on a
    small dataset (BreastMNIST: 18 expert steps in a 2-epoch window against MTT's 20 and
    HoP-TM's 80): cap the default at the expert's steps in the window."""
    if "syn_steps" in given or not all(hasattr(config, k) for k in ("syn_steps", "expert_epochs")):
        return config, None
    steps = window_steps(config.expert_epochs, train_images, expert_batch)
    if config.syn_steps <= steps:
        return config, None
    note = (
        f"the method's default match.syn_steps={config.syn_steps} is more than the {steps} SGD "
        f"steps an expert takes in its {config.expert_epochs}-epoch window ({train_images} "
        f"train images, batch {expert_batch}); using syn_steps={steps} (set it to choose "
        "otherwise)"
    )
    return dataclasses.replace(config, syn_steps=steps), note


def _scale_free_kappa(config: Any, given: Collection[str]) -> tuple[Any, str | None]:
    """HoP-TM's kappa_0 in absolute units (Eq. 7) is the published dataset's loss scale, 50x
    apart between the papers' datasets: by default use the same start as a quantile of the
    first iteration's element losses, which means the same on any dataset."""
    if getattr(config, "kappa_mode", None) != "absolute" or set(KAPPA_KNOBS) & set(given):
        return config, None
    note = (
        f"the default absolute match.kappa_base={config.kappa_base:g} is another dataset's loss "
        f"scale; using the scale-free match.kappa_mode=quantile "
        f"(kappa_quantile={config.kappa_quantile:g}; set kappa_mode to choose otherwise)"
    )
    return dataclasses.replace(config, kappa_mode="quantile"), note


def ipc_for_storage(
    config: Any, image_shape: tuple[int, ...], num_classes: int = 1
) -> tuple[Any, str | None]:
    """match.budget_ipc = P: as many images per class as fit the storage of P pixel images
    per class in the chosen parameterisation (dct keeps (K/n)^2 of the values: (n/K)^2 P
    images; latent: codes, after the decoder every set shares), replacing match.ipc, with a
    note; unchanged when budget_ipc is 0."""
    budget = getattr(config, "budget_ipc", 0)
    if not budget:
        return config, None
    values, shared = stored_values(config, image_shape)
    ipc = ipc_for_budget(budget, values, image_shape, num_classes, shared)
    note = (
        f"match.budget_ipc={budget}: {ipc} images per class in the {config.parameterization} "
        f"parameterisation ({values} stored values each"
        + (f", plus the decoder's {shared}" if shared else "")
        + f") take the storage of {budget} pixel image(s) per class; match.ipc={ipc}"
    )
    if shared and shared >= budget * math.prod(image_shape) * num_classes:
        note += " (the decoder alone exceeds the budget: raise budget_ipc or shrink the decoder)"
    return dataclasses.replace(config, ipc=ipc), note


def fit_to_data(
    config: Any,
    given: Collection[str],
    *,
    train_images: int,
    expert_batch: int | None,
    image_shape: tuple[int, ...] | None = None,
    num_classes: int = 1,
) -> tuple[Any, tuple[str, ...]]:
    """(config, notes): the method's defaults that depend on the data fitted to it, each
    change said in a note; knobs in `given` (a preset's or the user's) are never changed,
    except match.ipc when match.budget_ipc asks for a storage budget instead.
    `expert_batch` None (a given buffer that does not record it) skips the step rule."""
    notes: list[str] = []
    if image_shape is not None:
        config, note = ipc_for_storage(config, image_shape, num_classes)
        notes += [note] if note else []
    if expert_batch:
        config, note = _fewer_student_steps(config, given, train_images, expert_batch)
        notes += [note] if note else []
    config, note = _scale_free_kappa(config, given)
    notes += [note] if note else []
    return config, tuple(notes)
