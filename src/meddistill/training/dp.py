"""Differential privacy of a training run: the options (`DPConfig`), Opacus on demand, and the
noise level calibrated for everything trained on the same private data (`DPPlan`).

The guarantee is Opacus's DP-SGD: every step draws a Poisson sample of the training images
(each one in with probability q), clips each image's gradient to `max_grad_norm`, adds Gaussian
noise of standard deviation noise_multiplier x max_grad_norm, and an accountant bounds the
(epsilon, delta) of all steps together; the unit is one training image (added or removed).

Composition: when R networks train on the same private images (R experts of one buffer), the
noise is calibrated by Opacus (`get_noise_multiplier`) for the steps of all R runs together
(R x epochs x steps per epoch of the same subsampled Gaussian mechanism, in ONE accountant),
so the R trajectories TOGETHER are (epsilon, delta)-DP; `epsilon_spent` is that accountant's
epsilon for all of them (<= epsilon). Each run alone is then more private than that.
"""

from __future__ import annotations

import functools
import math
import secrets
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

from meddistill.data.dataset import MedicalDataset
from meddistill.errors import ConfigError
from meddistill.utils import Options, derive_seed, is_finite_number

ACCOUNTANTS = ("rdp", "prv")
INSTALL = 'pip install "meddistill[privacy]"'
MECHANISM = "DP-SGD (Opacus): Poisson sampling, per-sample gradient clipping, Gaussian noise"
UNIT = "one training image (added or removed)"


@dataclass
class DPConfig:
    """DP-SGD with Opacus: the (epsilon, delta) budget of everything trained on the private data
    (all experts of a buffer together), the clipping bound and the accountant.

    `noise_seed` null (the default) draws the seed of the Poisson sampling and of the noise from
    the operating system's secret randomness for every network, never written anywhere: the
    guarantee needs that randomness hidden. A given noise_seed makes a run reproducible (tests,
    debugging) and is recorded in the run's config, so the guarantee then holds only while that
    seed is kept secret.
    """

    epsilon: float | None = None  # the privacy budget; required (e.g. 8.0)
    delta: float | None = None  # null: 1 / (10 N), N the training images; must be < 1 / N
    max_grad_norm: float = 1.0  # per-sample gradient clipping bound C
    accountant: Literal["rdp", "prv"] = "rdp"  # Opacus accountant (rdp, or prv: tighter, slower)
    noise_seed: int | None = None  # null: a secret seed per network (the guarantee needs it hidden)

    def __post_init__(self) -> None:
        check = Options("dp", self)
        if not (is_finite_number(self.epsilon) and self.epsilon > 0):
            check.fail("epsilon", "a finite number > 0 (the privacy budget, e.g. 8.0)")
        if self.delta is not None and not (is_finite_number(self.delta) and 0 < self.delta < 1):
            check.fail("delta", "in (0, 1), below 1/N, or null (1 / (10 N))")
        check.positive("max_grad_norm")
        check.choice("accountant", ACCOUNTANTS)
        check.seeds("noise_seed", optional=True)

    def delta_for(self, num_images: int, where: str) -> float:
        """delta for N = num_images private images: the one given (refused unless < 1/N, the
        usual rule: delta = 1/N would allow publishing one image outright) or 1 / (10 N)."""
        if self.delta is None:
            return 1.0 / (10 * num_images)
        if self.delta >= 1.0 / num_images:
            raise ConfigError(
                f"option {where}.delta={self.delta:g} must be below 1/N = {1 / num_images:.3g} "
                f"(N = {num_images} training images); leave it null for 1 / (10 N)"
            )
        return float(self.delta)

    def secret(self, *keys: Any) -> int:
        """The seed of one network's Poisson sampling and noise: secret, or from noise_seed."""
        if self.noise_seed is None:
            return secrets.randbits(63)
        return derive_seed(self.noise_seed, "dp", *keys)


def require_opacus() -> Any:
    """The opacus module, or one line saying how to install it (only DP runs need it)."""
    try:
        import opacus
    except ImportError:
        raise ConfigError(
            f"differential privacy (a dp section) needs Opacus, which is not installed; "
            f"run: {INSTALL}"
        ) from None
    return opacus


def check_private_data(dataset: MedicalDataset) -> None:
    """DP-SGD protects the training images it samples, not statistics computed from them
    beforehand: refuse a normalisation measured on the train split (the default of MedMNIST
    and image folders), which every expert input and the set's meta.json carry unprotected."""
    if dataset.info.get("normalization_source") == "train split":
        raise ConfigError(
            f"dataset {dataset.name} is normalised with its train split's mean and std, a "
            "statistic of the private images that DP-SGD does not protect; give public values, "
            "e.g. dataset.normalization={mean: [0.5], std: [0.5]} (one per channel)"
        )


@dataclass(frozen=True)
class DPPlan:
    """The calibrated mechanism of `runs` networks trained on the same N private images:
    `steps` DP-SGD steps each (epochs x ceil(N / batch size)) at sample rate q = 1 / (steps
    per epoch), as Opacus's DPDataLoader samples."""

    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int  # per network
    runs: int
    epsilon_spent: float  # the accountant's epsilon for all runs' steps together

    @property
    def steps_per_epoch(self) -> int:
        return round(1 / self.sample_rate)

    def record(self) -> dict[str, Any]:
        """What an artifact records of the mechanism (buffer.json, meta.json, results.json);
        callers add how many networks it covers and how they compose."""
        return {
            "mechanism": MECHANISM,
            "unit": UNIT,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "epsilon_spent": self.epsilon_spent,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
        }


def plan_dp(
    dp: DPConfig, num_images: int, batch_size: int, epochs: int, runs: int, where: str
) -> DPPlan:
    """Calibrate the noise for `runs` networks x `epochs` epochs on `num_images` private images
    (Opacus's get_noise_multiplier on the total steps); `where` names the option (e.g.
    experts.dp) in errors."""
    delta = dp.delta_for(num_images, where)
    per_epoch = math.ceil(num_images / batch_size)  # len() of the DataLoader Opacus samples from
    rate = 1.0 / per_epoch
    steps = int(epochs) * per_epoch
    sigma = _noise_multiplier(float(dp.epsilon), delta, rate, steps * runs, dp.accountant, where)
    spent = spent_epsilon(sigma, rate, steps * runs, delta, dp.accountant)
    return DPPlan(
        float(dp.epsilon), delta, dp.accountant, sigma, float(dp.max_grad_norm), rate, steps,
        int(runs), spent,
    )  # fmt: skip


@functools.lru_cache(maxsize=16)
def _noise_multiplier(
    epsilon: float, delta: float, rate: float, steps: int, accountant: str, where: str
) -> float:
    """Opacus's calibration (cached: the buffer and its checks ask for the same one)."""
    require_opacus()
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal order is the largest alpha": a bound still
            return float(
                get_noise_multiplier(
                    target_epsilon=epsilon, target_delta=delta, sample_rate=rate, steps=steps,
                    accountant=accountant,
                )
            )  # fmt: skip
    except ValueError as exc:  # "The privacy budget is too low."
        raise ConfigError(
            f"option {where}.epsilon={epsilon:g} is too small for {steps} DP-SGD steps at sample "
            f"rate {rate:.3g} (Opacus: {exc}); raise it, or train fewer networks or epochs"
        ) from None


def spent_epsilon(sigma: float, rate: float, steps: int, delta: float, accountant: str) -> float:
    """The accountant's epsilon after `steps` steps of the sampled Gaussian (sigma, q)."""
    require_opacus()
    from opacus.accountants import create_accountant

    acct = create_accountant(mechanism=accountant)
    acct.history = [(sigma, rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acct.get_epsilon(delta=delta))


@dataclass(frozen=True)
class PrivateTraining:
    """One network's DP-SGD: the calibrated plan and its secret seed (never written)."""

    plan: DPPlan
    secret: int = field(repr=False)
