"""Window schedules: which stretch of which expert trajectory an iteration matches.

A method picks one schedule object; the engine asks it for a window every iteration:
- RandomWindows (MTT, HoP-TM Algorithm 1, FTD, ATT): start t ~ U{min_start, ..., max_start - 1}
  (upper bound exclusive, as numpy's randint in the references), target t + M, N steps.
- GrowingWindows (DATM): as random, with the upper bound growing linearly from growing_start
  to max_start by iteration growing_end.
- ProgressiveWindows (PTM, section 3.2): every round starts at theta_0; the end epoch grows
  from 1 to T over the run and the number of student steps grows with it.
- FixedWindows: always [start, start + M].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from meddistill.errors import ConfigError


@dataclass(frozen=True)
class Window:
    """Match student steps 0..syn_steps from expert epoch `start` against epoch `end`."""

    expert: int
    start: int
    end: int
    syn_steps: int

    @property
    def mid(self) -> int:
        """HoP-TM's intermediate teacher epoch t + floor(M / 2)."""
        return self.start + (self.end - self.start) // 2


class WindowSchedule(Protocol):
    """Where on an expert trajectory iteration `iteration` matches."""

    def window(
        self, iteration: int, expert: int, last_epoch: int, generator: torch.Generator
    ) -> Window: ...

    def furthest_epoch(self, last_epoch: int) -> int: ...

    def knobs(self) -> str:
        """The options that move the furthest epoch, with their values (for messages)."""
        ...


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high) from the explicit generator."""
    return int(torch.randint(low, high, (1,), generator=generator).item())


@dataclass(frozen=True)
class RandomWindows:
    """MTT's window: a uniform start in [min_start, max_start), `expert_epochs` ahead."""

    syn_steps: int
    expert_epochs: int
    min_start: int
    max_start: int

    def upper_bound(self, iteration: int) -> int:
        return self.max_start

    def window(
        self, iteration: int, expert: int, last_epoch: int, generator: torch.Generator
    ) -> Window:
        start = _randint(self.min_start, self.upper_bound(iteration), generator)
        return Window(expert, start, start + self.expert_epochs, self.syn_steps)

    def furthest_epoch(self, last_epoch: int) -> int:
        return self.max_start - 1 + self.expert_epochs

    def knobs(self) -> str:
        return f"max_start (now {self.max_start}) or expert_epochs (now {self.expert_epochs})"


@dataclass(frozen=True)
class GrowingWindows(RandomWindows):
    """DATM: the start's upper bound grows from growing_start to max_start by growing_end."""

    growing_start: int = 2
    growing_end: int = 0  # 0: max_start at once

    def upper_bound(self, iteration: int) -> int:
        if self.growing_end <= 0 or iteration >= self.growing_end:
            return self.max_start
        grown = (
            self.growing_start
            + (self.max_start - self.growing_start) * iteration / self.growing_end
        )
        return max(self.min_start + 1, int(grown))


@dataclass(frozen=True)
class FixedWindows:
    """Always the same window [start, start + expert_epochs] (tests, ablations)."""

    syn_steps: int
    expert_epochs: int
    start: int = 0

    def window(
        self, iteration: int, expert: int, last_epoch: int, generator: torch.Generator
    ) -> Window:
        return Window(expert, self.start, self.start + self.expert_epochs, self.syn_steps)

    def furthest_epoch(self, last_epoch: int) -> int:
        return self.start + self.expert_epochs

    def knobs(self) -> str:
        return f"the start (now {self.start}) or expert_epochs (now {self.expert_epochs})"


@dataclass(frozen=True)
class ProgressiveWindows:
    """PTM section 3.2: start at theta_0, end epoch 1 -> T over the run, steps grow with it."""

    iterations: int
    steps_per_epoch: float  # student steps per expert epoch
    end: int = 0  # T (0: the buffer's last epoch)
    max_steps: int = 0  # cap on a round's student steps (0: none)
    growth: Literal["linear", "sqrt"] = "linear"

    def end_epoch(self, iteration: int, last_epoch: int) -> int:
        """The end epoch at `iteration`: grows from 1 to T (linear or sqrt pace)."""
        total = self.end or last_epoch
        frac = iteration / max(1, self.iterations - 1)
        if self.growth == "sqrt":
            frac = math.sqrt(frac)
        return max(1, min(total, 1 + int(frac * (total - 1) + 0.5)))

    def steps(self, end: int) -> int:
        """Student steps of a round ending at `end`: steps per epoch x end, capped."""
        steps = max(1, int(round(self.steps_per_epoch * end)))
        return min(steps, self.max_steps) if self.max_steps else steps

    def window(
        self, iteration: int, expert: int, last_epoch: int, generator: torch.Generator
    ) -> Window:
        end = self.end_epoch(iteration, last_epoch)
        return Window(expert, 0, end, self.steps(end))

    def furthest_epoch(self, last_epoch: int) -> int:
        return self.end or last_epoch

    def knobs(self) -> str:
        return f"progressive_end (now {self.end})"


def sample_window(
    iteration: int,
    schedule: WindowSchedule,
    experts: list[int],
    last_epoch: int,
    generator: torch.Generator,
) -> Window:
    """Draw this iteration's expert (uniformly, from the generator), then its window."""
    if not experts:
        raise ConfigError("the buffer holds no finished expert; run `meddistill buffer` first")
    expert = experts[_randint(0, len(experts), generator)]
    window = schedule.window(iteration, expert, last_epoch, generator)
    if window.end > last_epoch:
        raise ConfigError(
            f"window [{window.start}, {window.end}] goes past the buffer's last epoch "
            f"{last_epoch}; lower max_start/expert_epochs (or progressive_end) or make a buffer "
            "with more epochs"
        )
    return window


def check_schedule(schedule: WindowSchedule, last_epoch: int) -> None:
    """Refuse, before any work, a schedule whose windows can leave the buffer."""
    furthest = schedule.furthest_epoch(last_epoch)
    if furthest > last_epoch:
        raise ConfigError(
            f"windows reach expert epoch {furthest} but the buffer ends at epoch {last_epoch}; "
            f"lower {schedule.knobs()}, or make a buffer with more epochs"
        )


def retraining_schedule(iterations: int, k: int) -> list[tuple[int, int]]:
    """PTM section 3.3 in iteration units: retraining points m_i = I - I/(k+1) * i (i = 1..k)
    and, for each, the snapshot iteration (m_i + m_{i+1}) / 2 (m_{k+1} = 0) whose complement
    subset replaces the current one at m_i. Returned as (snapshot_it, retrain_it), ascending."""
    points = [int(round(iterations - iterations / (k + 1) * i)) for i in range(1, k + 1)]
    pairs = []
    for i, m in enumerate(points):
        prev = points[i + 1] if i + 1 < len(points) else 0
        pairs.append(((m + prev) // 2, m))
    return sorted(pairs)
