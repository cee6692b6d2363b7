"""DM: Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023.

Every iteration draws a fresh randomly initialised network (seeded from the run's generator,
parameters frozen) and, for each class, matches the mean embedding (the flattened features
before the classifier, `model.embed`) of a real batch and of the class's synthetic images
after one shared (siamese) DSA draw: sum over classes of ||mean embed(real_c) -
mean embed(syn_c)||^2. Reference settings: lr_img 1.0 (SGD momentum 0.5), 256 real images per
class, 20,000 iterations, images initialised from real ones, evaluation lr 0.01.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from meddistill.matching.config import check_objective_options
from meddistill.matching.objective import (
    Objective,
    ObjectiveConfig,
    ObjectiveContext,
    RealSampler,
)
from meddistill.methods.objective import objective_method


@dataclass
class DMConfig(ObjectiveConfig):
    """DM has no knobs beyond the shared ones; its defaults are the reference's."""

    iterations: int = 20000
    lr_img: float = 1.0

    def __post_init__(self) -> None:
        check_objective_options(self)  # named match.*, before the base class's own checks
        super().__post_init__()


def mean_embedding_distance(real_emb: torch.Tensor, syn_emb: torch.Tensor) -> torch.Tensor:
    """||mean_i real_emb_i - mean_j syn_emb_j||^2 (DM's per-class loss)."""
    return ((real_emb.mean(dim=0) - syn_emb.mean(dim=0)) ** 2).sum()


class DistributionMatching(Objective):
    """A fresh random network per step; per-class mean-embedding matching under siamese DSA."""

    def __init__(self, cfg: DMConfig, ctx: ObjectiveContext) -> None:
        super().__init__()
        self.cfg, self.ctx = cfg, ctx

    def loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealSampler,
        generator: torch.Generator,
        step: int,
    ) -> torch.Tensor:
        model = self.ctx.new_network(generator)
        model.train()
        model.requires_grad_(False)
        total = images.new_zeros(())
        for c in range(self.ctx.num_classes):
            x_real = real(c, self.cfg.batch_real, generator)
            x_syn = images[self.ctx.class_slice(c)]
            x_real, x_syn = self.ctx.siamese(x_real, x_syn, generator)
            with torch.no_grad():
                real_emb = model.embed(x_real)
            total = total + mean_embedding_distance(real_emb, model.embed(x_syn))
        return total


def build(cfg: DMConfig, ctx: ObjectiveContext) -> DistributionMatching:
    return DistributionMatching(cfg, ctx)


METHOD = objective_method("dm", "Zhao & Bilen, WACV 2023", DMConfig, build)
