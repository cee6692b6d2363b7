"""Window schedules: which stretch of which expert trajectory an iteration matches.

- random (MTT, HoP-TM, FTD, ATT): start t ~ U{min_start, ..., max_start - 1} (upper bound
  exclusive, as numpy's randint in the references), target t + expert_epochs, syn_steps steps.
- growing (DATM): as random, with the upper bound growing linearly from growing_start to
  max_start by iteration growing_end.
- progressive (PTM, section 3.2): every round starts at theta_0; the end epoch grows from 1 to T
  over the run and the number of student steps grows with it.
- fixed: always [min_start, min_start + expert_epochs].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from meddistill.errors import ConfigError
from meddistill.matching.config import MatchConfig


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


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high) from the explicit generator."""
    return int(torch.randint(low, high, (1,), generator=generator).item())


def progressive_end(iteration: int, cfg: MatchConfig, last_epoch: int) -> int:
    """PTM end epoch at `iteration`: grows from 1 to T over the run (linear or sqrt pace)."""
    total = cfg.progressive_end or last_epoch
    frac = iteration / max(1, cfg.iterations - 1)
    if cfg.progressive_growth == "sqrt":
        frac = math.sqrt(frac)
    return max(1, min(total, 1 + int(frac * (total - 1) + 0.5)))


def progressive_steps(end: int, cfg: MatchConfig) -> int:
    """Student steps of a PTM round ending at `end`: steps per epoch x end, capped."""
    per_epoch = cfg.progressive_steps_per_epoch or cfg.syn_steps / cfg.expert_epochs
    steps = max(1, int(round(per_epoch * end)))
    return min(steps, cfg.progressive_max_steps) if cfg.progressive_max_steps else steps


def sample_window(
    iteration: int,
    cfg: MatchConfig,
    experts: list[int],
    last_epoch: int,
    generator: torch.Generator,
) -> Window:
    """Draw this iteration's expert (uniformly, from the generator) and window."""
    if not experts:
        raise ConfigError("the buffer holds no finished expert; run `meddistill buffer` first")
    expert = experts[_randint(0, len(experts), generator)]
    if cfg.schedule == "progressive":
        end = progressive_end(iteration, cfg, last_epoch)
        window = Window(expert, 0, end, progressive_steps(end, cfg))
    elif cfg.schedule == "fixed":
        window = Window(expert, cfg.min_start, cfg.min_start + cfg.expert_epochs, cfg.syn_steps)
    else:
        high = cfg.max_start
        if cfg.schedule == "growing" and cfg.growing_end > 0 and iteration < cfg.growing_end:
            grown = (
                cfg.growing_start
                + (cfg.max_start - cfg.growing_start) * iteration / cfg.growing_end
            )
            high = max(cfg.min_start + 1, int(grown))
        start = _randint(cfg.min_start, high, generator)
        window = Window(expert, start, start + cfg.expert_epochs, cfg.syn_steps)
    if window.end > last_epoch:
        raise ConfigError(
            f"window [{window.start}, {window.end}] goes past the buffer's last epoch "
            f"{last_epoch}; lower max_start/expert_epochs (or progressive_end) or make a buffer "
            "with more epochs"
        )
    return window


def check_schedule(cfg: MatchConfig, last_epoch: int) -> None:
    """Refuse, before any work, a schedule whose windows can leave the buffer."""
    if cfg.schedule == "progressive":
        end = cfg.progressive_end or last_epoch
        furthest = end
    elif cfg.schedule == "fixed":
        furthest = cfg.min_start + cfg.expert_epochs
    else:
        furthest = cfg.max_start - 1 + cfg.expert_epochs
    if furthest > last_epoch:
        raise ConfigError(
            f"windows reach expert epoch {furthest} but the buffer ends at epoch {last_epoch}; "
            f"lower max_start (now {cfg.max_start}) or expert_epochs (now {cfg.expert_epochs}), "
            "or make a buffer with more epochs"
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
