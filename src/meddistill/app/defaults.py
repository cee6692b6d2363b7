"""Settings that follow from the data rather than from one dataset's preset (issue 12).

A method's published window (MTT's CIFAR defaults: start in [0, 25), 3 epochs long) assumes a
buffer of 50 epochs; on the short buffers a CPU or a small dataset gets, it reaches past the
last epoch and the run was refused. Here a window the user left at its default is fitted
into the buffer instead, and the run's log says so; a window the user set is never changed
(it is still refused when it does not fit, naming the knobs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

from meddistill.errors import ConfigError
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
