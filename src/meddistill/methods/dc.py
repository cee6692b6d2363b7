"""DC: Zhao, Mopuri, Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021.

Each iteration a network is initialised afresh; for `outer_loop` steps the synthetic images
of every class are updated so that the gradient of the cross-entropy w.r.t. the network
parameters on them matches the gradient on a real batch of the same class (layer-wise
distance, summed over classes), and between those steps the network is trained on the
synthetic set for `inner_loop` epochs. (outer, inner) by IPC as the reference code:
1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10); another IPC
takes the entry of the nearest listed IPC. lr_img 0.1 (SGD momentum 0.5), lr_net 0.01, 1000
iterations, 256 real images per class, batch_train 256, evaluation lr 0.01.

`iterations` counts the paper's iterations (network re-initialisations); the run makes
iterations * outer_loop image updates.

Reference-code behaviour kept: the "ours" distance ignores one-dimensional parameters (biases,
norm weights): only weight matrices and kernels are matched, per output row. DC has no
augmentation while learning (DSA, meddistill.methods.dsa_method, adds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from meddistill.errors import ConfigError
from meddistill.matching.config import check_objective_options
from meddistill.matching.objective import (
    InnerLoopConfig,
    InnerLoopNetwork,
    InnerLoopObjective,
    ObjectiveContext,
    RealSampler,
)
from meddistill.methods.objective import objective_method

EPS = 1e-6  # the reference's guard in the cosine denominator


@dataclass
class DCConfig(InnerLoopConfig):
    """DC/DSA settings: the inner-loop network's plus the gradient distance."""

    dsa: bool = False  # DSA (meddistill.methods.dsa_method) is DC with it on
    dis_metric: Literal["ours", "mse", "cos"] = "ours"

    def __post_init__(self) -> None:
        check_objective_options(self)  # named match.*, before the base class's own checks
        super().__post_init__()


def layer_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """d(A, B) = sum over output rows i of (1 - A_i . B_i / (|A_i| |B_i| + eps)).

    A row is one output channel of a kernel (all its inputs and taps) or one output unit of a
    linear layer. One-dimensional gradients (biases, norm weights) give 0, as the reference.
    """
    if g_real.dim() <= 1:
        return g_real.new_zeros(())
    a = g_real.reshape(g_real.shape[0], -1)
    b = g_syn.reshape(g_syn.shape[0], -1)
    cos = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)
    return (1.0 - cos).sum()


def gradient_distance(
    g_real: list[torch.Tensor], g_syn: list[torch.Tensor], metric: str = "ours"
) -> torch.Tensor:
    """The matching loss D between two lists of per-parameter gradients.

    'ours': sum of layer_distance over layers (the paper's); 'mse': summed squared
    difference; 'cos': 1 - cosine of the two concatenated vectors (reference options).
    """
    if metric == "ours":
        return torch.stack([layer_distance(r, s) for r, s in zip(g_real, g_syn, strict=True)]).sum()
    if metric == "mse":
        return sum(((s - r) ** 2).sum() for r, s in zip(g_real, g_syn, strict=True))
    if metric == "cos":
        a = torch.cat([r.reshape(-1) for r in g_real])
        b = torch.cat([s.reshape(-1) for s in g_syn])
        return 1.0 - (a * b).sum() / (a.norm() * b.norm() + EPS)
    raise ConfigError(f"unknown dis_metric '{metric}'; choose ours, mse or cos")


class GradientMatching(InnerLoopObjective):
    """DC (and, with siamese DSA, DSA): per-class gradient matching on an inner-loop network."""

    def __init__(self, cfg: DCConfig, ctx: ObjectiveContext) -> None:
        super().__init__()
        self.cfg, self.ctx = cfg, ctx
        self.net = InnerLoopNetwork(cfg, ctx)
        self.steps_per_iteration = self.net.outer_loop

    def loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealSampler,
        generator: torch.Generator,
        step: int,
    ) -> torch.Tensor:
        model = self.net.at(step, generator)
        params = [p for p in model.parameters() if p.requires_grad]
        if self.cfg.dis_metric == "ours":  # the rest contributes 0: skip its gradients
            params = [p for p in params if p.dim() > 1]
        total = images.new_zeros(())
        for c in range(self.ctx.num_classes):
            x_real = real(c, self.cfg.batch_real, generator)
            x_syn = images[self.ctx.class_slice(c)]
            x_real, x_syn = self.ctx.siamese(x_real, x_syn, generator)
            y_real = torch.full((x_real.shape[0],), c, device=x_real.device, dtype=torch.long)
            y_syn = torch.full((x_syn.shape[0],), c, device=x_syn.device, dtype=torch.long)
            g_real = torch.autograd.grad(F.cross_entropy(model(x_real), y_real), params)
            g_real = [g.detach() for g in g_real]
            g_syn = torch.autograd.grad(
                F.cross_entropy(model(x_syn), y_syn), params, create_graph=True
            )
            total = total + gradient_distance(g_real, list(g_syn), self.cfg.dis_metric)
        self.metrics = {"outer_step": float(step % self.steps_per_iteration)}
        return total


def build(cfg: DCConfig, ctx: ObjectiveContext) -> GradientMatching:
    """The DC objective (DSA when cfg.dsa: the context then carries the augmentation)."""
    return GradientMatching(cfg, ctx)


METHOD = objective_method("dc", "Zhao, Mopuri, Bilen, ICLR 2021", DCConfig, build)
