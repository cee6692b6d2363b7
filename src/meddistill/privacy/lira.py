"""LiRA's maths (Carlini et al. 2022, "Membership inference attacks from first principles"):
the logit-scaled confidence of the true label, Gaussians fitted per image to the values
shadow pipelines give it when it was IN their data and when it was OUT, and the likelihood
ratio that scores a target network's value.

Why logit scaling: the confidence p of the true label piles up near 1 for every image a
network fits; phi = log(p / (1 - p)) spreads it out and makes it roughly Gaussian over
shadows (Section IV-B of the paper), so a Gaussian per image and side is a fair model.

Scores (higher = more likely a member), per image and target network, then averaged over
the target networks:
- online, when the image has IN and OUT values: log N(phi; mu_in, s_in^2) - log N(phi;
  mu_out, s_out^2), the log of the likelihood ratio;
- offline, when it has only OUT values: the paper's one-sided test Pr[Z < phi], Z ~
  N(mu_out, s_out^2), as its log-odds log Pr[Z < phi] - log Pr[Z > phi], so that it lies
  on a log scale too and reads 0 where phi is a typical OUT value (identical IN and OUT
  Gaussians score 0 online as well);
- with only IN values (an image every shadow trained on) the same log-odds against the IN
  Gaussian, and 0 for an image no shadow scored.
Which case an image falls in depends only on the shadows' random halves, never on whether
it is a member, so mixing the cases adds noise, not bias.

Variances: with few shadows a per-image variance is a poor estimate, so the paper uses one
global variance for all images below 64 shadows. Here the global variance of a side is the
pooled within-image variance (each value's squared distance to its own image's mean, over all
images), and an image with a single value on a side always takes it. Standard deviations are
population ones (ddof 0), as in the paper's code, and never below MIN_STD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from meddistill.errors import ConfigError

GLOBAL_BELOW = 64  # "auto": a global variance below this many shadows (the paper's advice)
MIN_STD = 1e-4  # a floor on every standard deviation: a constant side is not a point mass


@torch.no_grad()
def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """phi = log(p / (1 - p)) of the true class per row, float64. Computed as the true logit
    minus the log-sum-exp of the others, which equals it without ever forming p (p rounds to
    1 for a memorised image, where the plain formula gives inf)."""
    z = logits.double()
    y = labels.to(z.device).long().view(-1, 1)
    true = z.gather(1, y).squeeze(1)
    others = z.scatter(1, y, float("-inf")).logsumexp(dim=1)
    return (true - others).cpu().numpy()


@dataclass
class SideFit:
    """Per-image Gaussians of one side (IN or OUT): mean and std [T]; `count` values per
    image (0: no fit, mean and std NaN)."""

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray


def fit_side(phi: np.ndarray, mask: np.ndarray, global_variance: bool) -> SideFit:
    """Gaussians of the values phi[s, t] with mask[s, t] (shadow s, image t), per image t."""
    count = mask.sum(axis=0)
    seen = count > 0
    total = np.where(mask, phi, 0.0).sum(axis=0)
    mean = np.divide(total, count, out=np.full(phi.shape[1], np.nan), where=seen)
    squares = np.where(mask, (phi - np.where(seen, mean, 0.0)) ** 2, 0.0).sum(axis=0)
    own = np.divide(squares, count, out=np.full(phi.shape[1], np.nan), where=seen)
    pooled = squares.sum() / max(int(count.sum()), 1)
    std = np.sqrt(np.where(global_variance | (count < 2), pooled, own))
    std = np.where(seen, np.maximum(std, MIN_STD), np.nan)
    return SideFit(mean, std, count)


def use_global_variance(choice: bool | str, shadows: int) -> bool:
    """audit.lira_global_variance: true, false, or auto (global below GLOBAL_BELOW shadows)."""
    return shadows < GLOBAL_BELOW if choice == "auto" else bool(choice)


def _log_odds(z: np.ndarray) -> np.ndarray:
    """log Pr[N(0,1) < z] - log Pr[N(0,1) > z], stable in both tails."""
    return norm.logcdf(z) - norm.logsf(z)


def lira_scores(
    target_phi: np.ndarray,
    shadow_phi: np.ndarray,
    shadow_in: np.ndarray,
    *,
    global_variance: bool,
) -> np.ndarray:
    """Scores [T] of targets whose phi under K target networks is target_phi [K, T] (or [T]),
    from shadow values shadow_phi [S, T] and IN flags shadow_in [S, T] (see the module's
    docstring for the online, offline and one-sided cases)."""
    x = np.atleast_2d(np.asarray(target_phi, dtype=np.float64))
    phi = np.asarray(shadow_phi, dtype=np.float64)
    ins = np.asarray(shadow_in, dtype=bool)
    if phi.shape != ins.shape or phi.ndim != 2 or x.shape[1] != phi.shape[1]:
        raise ConfigError(
            f"LiRA needs shadow values and IN flags of one shape [shadows, targets] and target "
            f"values [networks, targets]; got {phi.shape}, {ins.shape} and {x.shape}"
        )
    if not (np.isfinite(phi).all() and np.isfinite(x).all()):
        raise ConfigError("LiRA's confidences hold NaN or inf values")
    inn, out = fit_side(phi, ins, global_variance), fit_side(phi, ~ins, global_variance)
    online = norm.logpdf(x, inn.mean, inn.std) - norm.logpdf(x, out.mean, out.std)
    offline = _log_odds((x - out.mean) / out.std)
    only_in = _log_odds((x - inn.mean) / inn.std)
    has_in, has_out = inn.count > 0, out.count > 0
    score = np.where(has_in & has_out, online, np.where(has_out, offline, only_in))
    score = np.where(has_in | has_out, score, 0.0)
    return score.mean(axis=0)
