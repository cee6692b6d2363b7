"""The scaffold every distillation loop shares (trajectory matching and surrogate objectives).

Why one: where a run keeps its checkpoint, how it resumes, and when it is evaluated,
checkpointed and shown decide whether a killed run ends bit-identical to an uninterrupted one
(checkpoint every k steps and at the last one; periodic evaluation never at the last step,
where the final evaluation runs). That policy lives here once; a loop kind supplies its
state, its step and its synthetic set.
"""

from __future__ import annotations

import abc
import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from tqdm import tqdm

from meddistill import distributed
from meddistill.augment.dsa import DEFAULT_STRATEGY
from meddistill.data.synthetic import SyntheticSet
from meddistill.locking import folder_lock
from meddistill.matching.state import resume_state
from meddistill.utils import derive_seed, make_generator

CHECKPOINT = "checkpoint.safetensors"
MetricSink = Callable[[dict[str, Any]], None]
Evaluator = Callable[[SyntheticSet, int], dict[str, Any]]
Rewind = Callable[[int, dict[str, Any]], None]


def _quiet(*_: Any) -> None:
    return None


@dataclass
class DistillRun:
    """Where a distillation writes and whom it tells, shared by every method.

    `out_dir` None: nothing is written (no checkpoint, no snapshots; a notebook run). The DSA
    strategy is decided once per run by the caller (the dataset's, or the one configured).
    """

    seed: int = 0
    out_dir: Path | None = None
    dsa_strategy: str = DEFAULT_STRATEGY
    method: str = "custom"
    on_metric: MetricSink = field(default=_quiet)
    log: Callable[[str], None] = field(default=_quiet)
    progress: bool = True
    evaluate: Evaluator | None = None
    rewind: Rewind = field(default=_quiet)  # (position, tags): forget records past a resume
    autoencoder: Any = None  # the trained autoencoder of match.parameterization=latent

    def warn(self, message: str) -> None:
        """Say it on stderr (above any progress bar) and in the run log."""
        tqdm.write(f"warning: {message}", file=sys.stderr)
        self.log(f"warning: {message}")

    def within(self, folder: str, **extra: Any) -> DistillRun:
        """The same run writing into out_dir/folder, its metric records tagged with `extra`
        (SeqMatch's stages)."""
        sink, rewind = self.on_metric, self.rewind
        return DistillRun(
            seed=self.seed,
            out_dir=self.out_dir / folder if self.out_dir is not None else None,
            dsa_strategy=self.dsa_strategy,
            method=self.method,
            on_metric=lambda record: sink({**record, **extra}),
            log=self.log,
            progress=self.progress,
            evaluate=self.evaluate,
            rewind=lambda position, tags: rewind(position, {**tags, **extra}),
            autoencoder=self.autoencoder,
        )


S = TypeVar("S")


class DistillLoop(abc.ABC, Generic[S]):
    """Runs a loop of `total` steps from a fresh or resumed state; returns the synthetic set."""

    run: DistillRun
    total: int
    unit: str = "it"  # progress-bar unit
    noun: str = "iteration"  # what one step is called in the log

    @abc.abstractmethod
    def initial_state(self) -> S: ...

    @abc.abstractmethod
    def load_state(self, path: Path) -> tuple[S, dict]: ...

    @abc.abstractmethod
    def position(self, state: S) -> int: ...

    @abc.abstractmethod
    def advance(self, state: S, generator: torch.Generator) -> dict[str, str]:
        """One step in place; returns the progress-bar postfix."""

    @abc.abstractmethod
    def checkpoint_meta(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def save_state(self, state: S, generator: torch.Generator, path: Path) -> None: ...

    @abc.abstractmethod
    def synthetic_set(self, state: S) -> SyntheticSet: ...

    def resumed(self, state: S) -> None:
        """Restore what lives outside the state tensors (objective networks); nothing here."""
        return None

    def start(self) -> tuple[S, torch.Generator]:
        """The checkpoint's state and generator, or a fresh state and the seeded generator."""
        generator = make_generator(derive_seed(self.run.seed, "distill"))
        out = self.run.out_dir
        if out is None:
            return self.initial_state(), generator
        out.mkdir(parents=True, exist_ok=True)
        state = resume_state(
            out / CHECKPOINT, self.load_state, self.checkpoint_meta(), generator,
            "configuration, method or buffer",
        )  # fmt: skip
        if state is None:
            self.run.rewind(0, {})
            return self.initial_state(), generator
        self.run.rewind(self.position(state), {})
        self.resumed(state)
        self.run.log(f"resuming from {out / CHECKPOINT} at {self.noun} {self.position(state)}")
        return state, generator

    def execute(self, eval_every: int = 0, checkpoint_every: int = 1) -> SyntheticSet:
        """Step to `total`, evaluating every `eval_every` and checkpointing every
        `checkpoint_every` steps and at the last."""
        with contextlib.ExitStack() as held:
            if self.run.out_dir is not None:  # one writer per run folder, also from a notebook
                held.enter_context(folder_lock(self.run.out_dir, "run folder"))
            return self._execute(eval_every, checkpoint_every)

    def _execute(self, eval_every: int, checkpoint_every: int) -> SyntheticSet:
        state, generator = self.start()
        out, evaluate = self.run.out_dir, self.run.evaluate
        writes = out is not None and distributed.is_main()  # under torchrun: rank 0 only
        bar = tqdm(
            total=self.total, initial=self.position(state), disable=not self.run.progress,
            desc=f"distill {self.run.method}", unit=self.unit, dynamic_ncols=True,
        )  # fmt: skip
        while self.position(state) < self.total:
            bar.set_postfix(**self.advance(state, generator))
            bar.update(1)
            done = self.position(state)
            if eval_every and evaluate is not None and done % eval_every == 0 and done < self.total:
                result = evaluate(self.synthetic_set(state), done)
                self.run.on_metric({"stage": "eval", "iteration": done, **result})
            if writes and (done % checkpoint_every == 0 or done == self.total):
                self.save_state(state, generator, out / CHECKPOINT)
        bar.close()
        return self.synthetic_set(state)
