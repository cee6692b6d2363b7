"""DSA: Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021.

DC (meddistill.methods.dc) plus differentiable siamese augmentation: for each class the real
and the synthetic batch get the SAME random draw (shared parameters) before their gradients
are compared, and the inner-loop network trains on the synthetic set with per-sample DSA. The
strategy is the dataset's default (no flip where laterality matters) unless `dsa_strategy` is
set. Everything else (loops by IPC, lr_img 0.1, lr_net 0.01, 1000 iterations) is DC's.

Named dsa_method so it does not clash with meddistill.augment.dsa; the method name is "dsa".
"""

from __future__ import annotations

from dataclasses import dataclass

from meddistill.methods.dc import DCConfig, build
from meddistill.methods.objective import objective_method


@dataclass
class DSAConfig(DCConfig):
    """DC's knobs with the siamese augmentation on."""

    dsa: bool = True


METHOD = objective_method("dsa", "Zhao & Bilen, ICML 2021", DSAConfig, build)
