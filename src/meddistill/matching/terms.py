"""The parts of a trajectory-matching loss a method assembles: which student step is matched,
which parameter elements count, and the terms summed into L.

Per iteration the engine unrolls the student from theta_t, then
1. `StepChoice` names the matched student step k (N, or ATT's closest step);
2. each `ElementMask` (HoP-TM's easy-to-complex mask, SMDD's pruning) narrows the elements
   of the match loss, in order, combined with AND;
3. the `LossTerm`s, each with its weight, are summed in order into L.
Image-side terms (PTM's overlap) act on the images directly: `ImageTerm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from meddistill.matching import losses


@dataclass
class MatchContext:
    """What the parts of one iteration see: the expert's window states, the iteration, the
    persistent state (HoP-TM's cumulative mask and kappa live there) and the record of
    values that the iteration reports."""

    iteration: int
    theta_start: torch.Tensor
    theta_mid: torch.Tensor
    theta_target: torch.Tensor
    state: object  # matching.state.DistillState
    exclude: torch.Tensor | None
    mask: torch.Tensor | None = None
    record: dict[str, float] = field(default_factory=dict)


class StepChoice(Protocol):
    def __call__(self, states: list[torch.Tensor], target: torch.Tensor) -> int: ...


def last_step(states: list[torch.Tensor], target: torch.Tensor) -> int:
    """MTT: match the student's last state w_N."""
    return len(states) - 1


def closest_step(states: list[torch.Tensor], target: torch.Tensor) -> int:
    """ATT: match the student step closest to the target (L1, no gradient)."""
    return losses.argmin_step(states, target)


class ElementMask(Protocol):
    def __call__(self, w_end: torch.Tensor, ctx: MatchContext) -> torch.Tensor: ...


@dataclass(frozen=True)
class EasyToComplex:
    """HoP-TM Eq. (5)-(7): keep the elements with l_i < kappa, kappa growing by mu every P
    iterations; kappa_base absolute, or the `quantile` of the first iteration's l_i."""

    kappa_mode: Literal["absolute", "quantile"]
    kappa_base: float
    kappa_quantile: float
    mu: float
    period: int
    cumulative: bool = True

    def kappa(self, element_loss: torch.Tensor, ctx: MatchContext) -> float:
        state = ctx.state
        if state.kappa_base is None:  # type: ignore[attr-defined]
            if self.kappa_mode == "quantile":
                values = element_loss.detach()
                if ctx.exclude is not None:
                    values = values[~ctx.exclude]
                base = float(torch.quantile(values.float().cpu(), self.kappa_quantile))
            else:
                base = self.kappa_base
            state.kappa_base = base  # type: ignore[attr-defined]
        return losses.kappa_schedule(
            ctx.iteration,
            state.kappa_base,
            self.mu,
            self.period,  # type: ignore[attr-defined]
        )

    def __call__(self, w_end: torch.Tensor, ctx: MatchContext) -> torch.Tensor:
        element = losses.per_element_loss(w_end, ctx.theta_target)
        kappa = self.kappa(element, ctx)
        state = ctx.state
        state.mask = losses.easy_to_complex_mask(  # type: ignore[attr-defined]
            element,
            kappa,
            state.mask,
            self.cumulative,
            ctx.exclude,  # type: ignore[attr-defined]
        )
        ctx.record["kappa"] = kappa
        return state.mask  # type: ignore[attr-defined]


@dataclass(frozen=True)
class HardestPruned:
    """SMDD: drop the `ratio` hardest-to-match elements, recomputed every iteration."""

    ratio: float
    by: Literal["mismatch", "displacement"] = "mismatch"

    def __call__(self, w_end: torch.Tensor, ctx: MatchContext) -> torch.Tensor:
        scores = losses.prune_scores(self.by, w_end, ctx.theta_start, ctx.theta_target)
        return losses.prune_mask(scores, self.ratio, ctx.exclude)


class LossTerm(Protocol):
    name: str
    weight: float

    def steps(self, k: int) -> set[int]: ...

    def __call__(
        self, states: dict[int, torch.Tensor], k: int, ctx: MatchContext
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class ParameterMatch:
    """MTT / HoP-TM Eq. (2) (PTM Eq. (3) with theta_start = theta_0): the normalised parameter
    distance, over the masked elements when a mask is in force (HoP-TM Eq. (5))."""

    weight: float = 1.0
    name: str = "match"

    def steps(self, k: int) -> set[int]:
        return {k}

    def __call__(self, states: dict[int, torch.Tensor], k: int, ctx: MatchContext) -> torch.Tensor:
        if ctx.mask is not None:
            return losses.masked_param_loss(states[k], ctx.theta_start, ctx.theta_target, ctx.mask)
        return losses.normalized_param_loss(states[k], ctx.theta_start, ctx.theta_target)


@dataclass(frozen=True)
class ShapePotential:
    """HoP-TM Eq. (3)-(4): the triangle (start, middle, end) of the student against the
    teacher's; `form` 'code' (all three vertex angles) or 'paper' (the midpoint angle)."""

    weight: float
    form: Literal["code", "paper"] = "code"
    name: str = "shape"

    def steps(self, k: int) -> set[int]:
        return {max(1, k // 2), k}

    def __call__(self, states: dict[int, torch.Tensor], k: int, ctx: MatchContext) -> torch.Tensor:
        teacher = (ctx.theta_start, ctx.theta_mid, ctx.theta_target)
        student = (ctx.theta_start, states[max(1, k // 2)], states[k])
        fn = losses.shape_potential_code if self.form == "code" else losses.shape_potential_paper
        return fn(teacher, student)


class ImageTerm(Protocol):
    name: str
    weight: float

    def gradient(
        self, images: torch.Tensor, hard_labels: torch.Tensor, foundation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class OverlapMitigation:
    """PTM Eq. (4), weight beta_2: pushes each class's complement subset away from its
    foundation subset (Gaussian kernel, bandwidth sigma or the median same-class distance).
    `gradient` returns (the unweighted value, the image gradient of the weighted term)."""

    weight: float
    sigma: float = 0.0
    name: str = "overlap"

    def gradient(
        self, images: torch.Tensor, hard_labels: torch.Tensor, foundation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.detach().requires_grad_(True)
        sigma = self.sigma or losses.median_sigma(x, hard_labels)
        ov = losses.overlap_loss(x, hard_labels, foundation, sigma)
        (grad,) = torch.autograd.grad(self.weight * ov, x)
        return ov.detach(), grad
