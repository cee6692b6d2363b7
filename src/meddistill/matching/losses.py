"""Loss terms of the trajectory-matching family, one named function per equation.

Papers: MTT (Cazenavette et al. 2022), HoP-TM (Dong, Bian et al., paper 002 in
../shared/papers), PTM (Yu, Liu, Chen, paper 001), ATT (Liu et al. 2024). Where a paper and its
public code disagree, both forms are offered and the code's is the default (it produced the
published numbers); see docs of each function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from meddistill.errors import ConfigError


def normalized_param_loss(
    w_end: torch.Tensor, theta_start: torch.Tensor, theta_target: torch.Tensor
) -> torch.Tensor:
    """MTT / HoP-TM Eq. (2): ||w_N - theta_{t+M}||^2 / ||theta_{t+M} - theta_t||^2.

    PTM Eq. (3) is the same expression with theta_start = theta_0 (every round starts at 0).
    """
    return (w_end - theta_target).pow(2).sum() / (theta_target - theta_start).pow(2).sum()


def per_element_loss(w_end: torch.Tensor, theta_target: torch.Tensor) -> torch.Tensor:
    """HoP-TM's l_i = (w_N,i - theta_T,i)^2: one value per scalar parameter element (not
    normalised, as in the reference code), compared against kappa in Eq. (6)."""
    return (w_end - theta_target).pow(2)


def kappa_schedule(iteration: int, kappa_base: float, mu: float, period: int) -> float:
    """HoP-TM Eq. (7): kappa = kappa_base * mu ** floor(iteration / P)."""
    return float(kappa_base) * float(mu) ** (int(iteration) // int(period))


def easy_to_complex_mask(
    element_loss: torch.Tensor,
    kappa: float,
    previous: torch.Tensor | None = None,
    cumulative: bool = True,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """HoP-TM Eq. (6): v_i = 1 where l_i < kappa ("easy"), else 0.

    cumulative=True (the reference code, default): v starts at 0 and is only ever set to 1, so
    an element once easy stays included. cumulative=False (the paper): v is recomputed from
    scratch every iteration. `exclude` marks elements that cannot move (a conv bias before an
    instance norm gets exactly zero gradient, so its l_i is 0 and it would always count as easy).
    """
    mask = element_loss.detach() < kappa
    if cumulative and previous is not None:
        mask = mask | previous.to(torch.bool)
    if exclude is not None:
        mask = mask & ~exclude.to(torch.bool)
    return mask


def masked_param_loss(
    w_end: torch.Tensor,
    theta_start: torch.Tensor,
    theta_target: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """HoP-TM Eq. (5)/(8) first term: sum_i v_i l_i / sum_i v_i (theta_start,i - theta_T,i)^2.

    The denominator is masked too (reference code). An empty mask gives 0 with a zero gradient
    instead of the reference's 0/0 = NaN.
    """
    v = mask.to(w_end.dtype)
    num = (v * (w_end - theta_target).pow(2)).sum()
    den = (v * (theta_start - theta_target).pow(2)).sum()
    if not bool(mask.any()):
        return num * 0.0
    return num / den


def _unit(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm().clamp_min(1e-12)


def angle_cosine(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """HoP-TM Eq. (3): psi(a, b, c) = cos of the angle at b = <e_ab, e_cb> with unit vectors
    e_ab = (a - b)/||a - b||, e_cb = (c - b)/||c - b||."""
    return torch.dot(_unit(a - b), _unit(c - b))


def shape_potential_paper(
    teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    student: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """HoP-TM Eq. (4), paper form: smooth-L1 between the cosines of the angle at the middle
    point, teacher (theta_t, theta_mid, theta_{t+M}) vs student (theta_t, w_{N/2}, w_N)."""
    return F.smooth_l1_loss(angle_cosine(*student), angle_cosine(*teacher).detach())


def _angle_gram(points: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """[3, 3, 3] tensor G[i, j, k] = <e(p_i - p_j), e(p_k - p_j)> over all vertex triples
    (RKD-style angle potential; entries with i == j or k == j involve a zero vector -> 0)."""
    n = len(points)
    rows = []
    for j in range(n):
        diffs = torch.stack(
            [
                _unit(points[i] - points[j]) if i != j else torch.zeros_like(points[j])
                for i in range(n)
            ]
        )
        rows.append(diffs @ diffs.T)  # [i, k] at vertex j
    return torch.stack(rows, dim=1)  # -> [i, j, k]


def shape_potential_code(
    teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    student: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """HoP-TM Eq. (4), reference-code form (default): all three vertex angles. Build the 3x3x3
    tensor of cosines between normalised pairwise differences for each triple of points and
    compare teacher and student with smooth-L1, mean over the 27 entries."""
    return F.smooth_l1_loss(_angle_gram(student), _angle_gram(teacher).detach())


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """k(a_i, b_j) = exp(-||a_i - b_j||^2 / (2 sigma^2)) on flattened rows."""
    d2 = torch.cdist(a.flatten(1), b.flatten(1)).pow(2)
    return torch.exp(-d2 / (2.0 * sigma * sigma))


def overlap_loss(
    images: torch.Tensor,
    labels: torch.Tensor,
    foundation: torch.Tensor,
    sigma: float,
) -> torch.Tensor:
    """PTM Eq. (4): sum over (i in S^f, j in S^c) of 2k(f_i, c_j) - k(c_i, c_j) - k(f_i, f_j),
    with k = Gaussian kernel x same-class indicator.

    Minimising it pushes the foundation and complement subsets of each class apart (it is minus
    an unnormalised MMD^2 between them). The paper's double sum pairs index i of S^f with j of
    S^c; the within-subset terms are read as sums over all pairs of each subset (the MMD
    estimator the paper names), scaled to the same |S^f| x |S^c| count. Labels must be hard.
    `foundation` is a bool mask over the images.
    """
    same = labels.view(-1, 1) == labels.view(1, -1)
    k = gaussian_kernel(images, images, sigma) * same.to(images.dtype)
    f = foundation.to(torch.bool)
    c = ~f
    nf, nc = int(f.sum()), int(c.sum())
    if nf == 0 or nc == 0:
        return images.sum() * 0.0
    k_fc = k[f][:, c].sum()
    k_ff = k[f][:, f].sum() * (nc / nf)
    k_cc = k[c][:, c].sum() * (nf / nc)
    return 2.0 * k_fc - k_cc - k_ff


def median_sigma(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Default kernel bandwidth: the median distance between same-class synthetic images (the
    usual MMD median heuristic), recomputed every iteration without gradient. A fixed sigma
    saturates as the images move (k -> 0 and the term stops acting); the PTM paper does not
    state its sigma. Falls back to sqrt(values per image) when no class has two images."""
    with torch.no_grad():
        flat = images.detach().flatten(1)
        same = labels.view(-1, 1) == labels.view(1, -1)
        upper = torch.triu(same, diagonal=1)
        if not bool(upper.any()):
            return math.sqrt(flat.shape[1])
        d = torch.cdist(flat, flat)[upper]
        return max(float(d.median()), 1e-6)


def argmin_step(states: list[torch.Tensor], target: torch.Tensor) -> int:
    """ATT: the inner step k >= 1 whose state is closest to the target in L1 (no gradient)."""
    with torch.no_grad():
        dists = torch.stack([(s - target).abs().sum() for s in states[1:]])
    return int(torch.argmin(dists).item()) + 1


PRUNE_CRITERIA = ("mismatch", "displacement")


def prune_scores(
    kind: str,
    w_end: torch.Tensor,
    theta_start: torch.Tensor,
    theta_target: torch.Tensor,
) -> torch.Tensor:
    """Per-element difficulty: 'mismatch' (w_N - theta_T)^2 or 'displacement' (theta_T -
    theta_start)^2. Detached: the ranking is a selection, not part of the gradient."""
    if kind == "mismatch":
        return (w_end.detach() - theta_target).pow(2)
    if kind == "displacement":
        return (theta_target - theta_start).pow(2)
    raise ConfigError(f"option prune_by={kind!r} is not valid; choose one of {PRUNE_CRITERIA}")


def prune_mask(
    element_loss: torch.Tensor,
    ratio: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool mask keeping the (1 - ratio) easiest elements: the floor(ratio * n) elements with
    the largest `element_loss` among the n not excluded are pruned (False), as are the excluded
    ones. Ties prune the lower index first (a stable sort), so the mask is deterministic.

    SMDD (Li et al. 2022). Drop-in for easy_to_complex_mask: pass the result as `mask` to
    masked_param_loss.
    """
    if not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"option prune_ratio must be in [0, 1), got {ratio}")
    values = element_loss.detach().flatten()
    eligible = torch.ones_like(values, dtype=torch.bool)
    if exclude is not None:
        if exclude.shape != element_loss.shape:
            raise ConfigError(
                f"exclude mask has shape {tuple(exclude.shape)} but the parameter vector has "
                f"{tuple(element_loss.shape)}"
            )
        eligible = ~exclude.to(torch.bool).flatten()
    n = int(eligible.sum())
    num_pruned = int(float(ratio) * n)
    keep = eligible.clone()
    if num_pruned > 0:
        ranked = torch.where(eligible, values, torch.full_like(values, -float("inf")))
        order = torch.argsort(ranked, descending=True, stable=True)
        keep[order[:num_pruned]] = False
    return keep.view(element_loss.shape)
