"""HoP-TM: Dong, Bian et al., "High-Order Progressive Trajectory Matching for Medical Image
Dataset Distillation" (paper 002; code Bian-jh/HoP-TM, built on DATM's code).

Algorithm 1, as the parts below assemble it, per iteration:
  sample an expert and a start t ~ U[min_start, max_start)      -> RandomWindows
  unroll N student steps from theta_t on the synthetic images   -> the engine's student
  l_i = (w_N,i - theta_{t+M},i)^2, v_i = [l_i < kappa] (Eq. 6),
  kappa = kappa_0 * mu^floor(it / P) (Eq. 7)                    -> EasyToComplex
  L = masked normalised distance (Eq. 5)                        -> ParameterMatch
      + lambda * shape-wise potential of (theta_t, theta_{t+M/2}, theta_{t+M}) against
        (theta_t, w_{N/2}, w_N) (Eq. 3-4)                       -> ShapePotential
Reference-code forms by default: all three vertex angles (`shape_form: paper` for the midpoint
angle), cumulative mask (`e2c_cumulative: false` for the paper's per-iteration mask).
Defaults: the published PathMNIST IPC 1/5/10 row on flat (GSAM) experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meddistill.data.dataset import MedicalDataset
from meddistill.matching.config import SECTION, TrajectoryConfig
from meddistill.matching.engine import TrajectoryParts
from meddistill.matching.loop import DistillRun
from meddistill.matching.terms import EasyToComplex, LossTerm, ParameterMatch, ShapePotential
from meddistill.methods.trajectory import random_windows, trajectory_method
from meddistill.utils import Options


@dataclass
class HoPTMConfig(TrajectoryConfig):
    """The shared knobs plus the shape-wise potential (Eq. 3-4) and easy-to-complex matching
    (Eq. 5-7); either can be switched off for the paper's Table 4 ablation."""

    syn_steps: int = 80
    lr_img: float = 10.0
    lr_lr: float = 1e-7
    batch_syn: int = 10
    easy_to_complex: bool = True
    e2c_cumulative: bool = True
    kappa_mode: Literal["absolute", "quantile"] = "absolute"
    kappa_base: float = 5e-9  # kappa_0 in absolute units (Eq. 7)
    kappa_quantile: float = 0.03  # kappa_0 as a quantile of the first l_i (scale-free)
    kappa_mu: float = 1.5
    kappa_period: int = 500
    shape_potential: bool = True
    shape_form: Literal["code", "paper"] = "code"
    shape_lambda: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check = Options(SECTION, self)
        check.positive("kappa_base")
        check.fraction("kappa_quantile", low_open=True)
        check.at_least("kappa_mu", minimum=1.0, zero="kappa grows")
        check.counts("kappa_period")
        check.at_least("shape_lambda")


def parts(cfg: HoPTMConfig, dataset: MedicalDataset, run: DistillRun) -> TrajectoryParts:
    """Algorithm 1: random window, easy-to-complex mask, match + lambda * shape potential."""
    terms: list[LossTerm] = [ParameterMatch()]
    if cfg.shape_potential:
        terms.append(ShapePotential(cfg.shape_lambda, cfg.shape_form))
    masks = []
    if cfg.easy_to_complex:
        masks.append(
            EasyToComplex(
                cfg.kappa_mode,
                cfg.kappa_base,
                cfg.kappa_quantile,
                cfg.kappa_mu,
                cfg.kappa_period,
                cfg.e2c_cumulative,
            )  # fmt: skip
        )
    return TrajectoryParts(windows=random_windows(cfg), terms=terms, masks=masks)


METHOD = trajectory_method(
    "hoptm", "Dong, Bian et al., HoP-TM (paper 002)", HoPTMConfig, parts, experts="gsam"
)
