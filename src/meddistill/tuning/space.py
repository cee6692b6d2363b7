"""What `meddistill tune` searches: each method's key knobs, with ranges that follow from the
method's own defaults (or the preset given) and from the expert buffer, not from one dataset.

A knob is searched when the method's config has it: the image learning rate and the learned
step size's initial value and learning rate (log scale, a decade or two around the start
value), the student steps per window, the window length and its start range (kept inside the
buffer, so no trial asks for an epoch the experts do not have), HoP-TM's scale-free kappa
quantile, PTM's overlap weight, and DM-style methods' image learning rate. `--params` narrows
the search to a subset; everything not searched keeps its configured value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from meddistill.errors import ConfigError


class Trial(Protocol):
    """The part of optuna.Trial a space needs (a stand-in in tests)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool = False) -> int: ...


@dataclass(frozen=True)
class Knob:
    """One searched option: match.<name> in [low, high], integer or float, log or linear."""

    name: str
    low: float
    high: float
    integer: bool = False
    log: bool = False

    def suggest(self, trial: Trial) -> float | int:
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def describe(self) -> str:
        kind = "int" if self.integer else "float"
        return f"{self.name}: {kind} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"


def _around(name: str, value: float, below: float, above: float) -> Knob:
    """A log-scale float knob from value / below to value * above."""
    return Knob(name, value / below, value * above, log=True)


def _float_knobs(cfg: Any) -> list[Knob]:
    knobs = []
    if hasattr(cfg, "lr_img"):
        knobs.append(_around("lr_img", cfg.lr_img, 10.0, 10.0))
    if hasattr(cfg, "syn_lr_init"):
        knobs.append(_around("syn_lr_init", cfg.syn_lr_init, 5.0, 5.0))
    if getattr(cfg, "lr_lr", 0) > 0:
        knobs.append(_around("lr_lr", cfg.lr_lr, 100.0, 100.0))
    if getattr(cfg, "kappa_mode", None) == "quantile":
        knobs.append(Knob("kappa_quantile", 0.005, 0.3, log=True))
    if getattr(cfg, "overlap", False) and getattr(cfg, "overlap_weight", 0) > 0:
        knobs.append(_around("overlap_weight", cfg.overlap_weight, 100.0, 10.0))
    return knobs


def _window_knobs(cfg: Any, buffer_epochs: int | None) -> list[Knob]:
    """Student steps, window length and start range, inside a buffer of `buffer_epochs`."""
    if not hasattr(cfg, "syn_steps"):
        return []
    if getattr(cfg, "schedule", None) == "progressive":  # PTM: the window grows on its own
        per_epoch = cfg.progressive_steps_per_epoch or cfg.syn_steps / cfg.expert_epochs
        return [_around("progressive_steps_per_epoch", per_epoch, 3.0, 3.0)]
    steps = int(cfg.syn_steps)
    knobs = [Knob("syn_steps", max(2, steps // 2), max(3, steps * 2), integer=True, log=True)]
    if buffer_epochs is None or not hasattr(cfg, "max_start"):
        return knobs
    longest = max(1, buffer_epochs // 2)
    knobs.append(Knob("expert_epochs", 1, longest, integer=True))
    # max_start is exclusive; the window [start, start + expert_epochs] must end in the buffer
    knobs.append(Knob("max_start", 1, max(1, buffer_epochs - 1), integer=True))
    return knobs


@dataclass(frozen=True)
class SearchSpace:
    """The knobs of one tuning run, in the order they are suggested."""

    knobs: tuple[Knob, ...]

    @classmethod
    def for_config(
        cls, cfg: Any, buffer_epochs: int | None, params: list[str] | None = None
    ) -> SearchSpace:
        """The space of a method config (its values are the centres); `params` narrows it."""
        knobs = _float_knobs(cfg) + _window_knobs(cfg, buffer_epochs)
        if params:
            known = {k.name for k in knobs}
            unknown = [p for p in params if p not in known]
            if unknown:
                raise ConfigError(
                    f"tune.params: {', '.join(unknown)} cannot be searched for this method; "
                    f"searchable: {', '.join(sorted(known)) or 'none'}"
                )
            knobs = [k for k in knobs if k.name in params]
        if not knobs:
            raise ConfigError("tune: this method has no knob to search (tune.params is empty)")
        return cls(tuple(knobs))

    def suggest(self, trial: Trial) -> dict[str, float | int]:
        """One trial's values (`apply` keeps the window inside the buffer)."""
        return {k.name: k.suggest(trial) for k in self.knobs}

    def describe(self) -> list[str]:
        return [k.describe() for k in self.knobs]


def apply(cfg: Any, values: dict[str, float | int], buffer_epochs: int | None) -> Any:
    """cfg with a trial's values, the window clipped into the buffer: max_start is lowered so
    that start + expert_epochs never passes the buffer's last epoch (said in the record)."""
    updated = dataclasses.replace(cfg, **values)
    if buffer_epochs is not None and hasattr(updated, "max_start"):
        room = buffer_epochs - updated.expert_epochs + 1  # exclusive upper bound of start
        if updated.max_start > room:
            updated = dataclasses.replace(updated, max_start=max(1, room))
    return updated
