"""The outer loop both distillers share (trajectory matching and surrogate objectives).

Why one: when a run is evaluated, checkpointed and shown matters for resuming exactly
(checkpoint every k steps and at the last one; periodic evaluation never at the last step,
where the final evaluation runs), so that policy lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def drive(
    *,
    total: int,
    position: Callable[[], int],
    advance: Callable[[], dict[str, str]],
    save: Callable[[], None],
    checkpoint_every: int,
    eval_every: int = 0,
    evaluate: Callable[[int], Any] | None = None,
    desc: str,
    unit: str,
    progress: bool,
) -> None:
    """Call `advance()` (one step; returns the progress-bar postfix) until `position()` reaches
    `total`; after a step, `evaluate(done)` every `eval_every` steps before the last and
    `save()` every `checkpoint_every` steps and at the last."""
    bar = tqdm(
        total=total, initial=position(), disable=not progress, desc=desc, unit=unit,
        dynamic_ncols=True,
    )  # fmt: skip
    while position() < total:
        bar.set_postfix(**advance())
        bar.update(1)
        done = position()
        if eval_every and evaluate is not None and done % eval_every == 0 and done < total:
            evaluate(done)
        if done % checkpoint_every == 0 or done == total:
            save()
    bar.close()
