"""CAFE: Wang, Zhao et al., "CAFE: Learning to Condense Dataset by Aligning Features",
CVPR 2022 (reference code kaiwang960112/CAFE).

Per step, on the current inner-loop network (re-initialised every iteration and trained on
the synthetic set between outer steps, as DC):
- layer-wise feature alignment (`layer_feature_loss`): for every block's feature map, the
  squared distance between the per-class means of real and synthetic features, summed over
  classes and weighted per layer;
- the embedding term: the same on the flattened final features, weight `embed_weight`;
- the discrimination loss (`discrimination_loss`): every real feature is classified by its
  inner products with the synthetic class centres (means of the synthetic embeddings) and
  scored with cross-entropy summed over the real batch, weight `discrimination_weight`.

Feature maps follow the reference ConvNet: the output of each block's activation (before its
pooling) and, last, the final pooled map (its flattening is the embedding). Default layer
weights are the reference's: 1.0 for the last two maps and 0.1 for the earlier ones (depth 3:
0.1, 0.1, 1.0, 1.0). Reference settings: lr_img 0.1 halved at iterations 1200, 1600, 1800 of
2000, lr_net 0.01, 256 real images per class, discrimination weight 0.01, no augmentation
(its scripts run the DC variant; `dsa: true` adds siamese DSA).

One difference, on purpose: the reference ends its outer and inner loops when a watcher of the
network's real-data accuracy settles (outer: range of the last 10 accuracies < 0.04; inner:
range > 0.03), which makes the run length depend on the data; here the loops have DC's fixed
lengths by IPC (outer_loop, inner_loop), so runs are reproducible and their cost is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from meddistill.errors import ConfigError
from meddistill.matching.config import SECTION, check_objective_options
from meddistill.matching.objective import (
    InnerLoopConfig,
    InnerLoopNetwork,
    InnerLoopObjective,
    ObjectiveContext,
    RealSampler,
)
from meddistill.methods.objective import objective_method
from meddistill.utils import Options, is_finite_number

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.GELU)


@dataclass
class CAFEConfig(InnerLoopConfig):
    """CAFE's loss weights; `layer_weights` empty: the reference pattern (see the docstring)."""

    iterations: int = 2000
    lr_img_decay_at: list[int] = field(default_factory=lambda: [1200, 1600, 1800])
    dsa: bool = False
    layer_weights: list[float] = field(default_factory=list)
    embed_weight: float = 1.0
    discrimination_weight: float = 0.01

    def __post_init__(self) -> None:
        check_objective_options(self)  # named match.*, before the base class's own checks
        super().__post_init__()
        check = Options(SECTION, self)
        if not all(is_finite_number(w) and w >= 0 for w in self.layer_weights):
            check.fail("layer_weights", "a list of finite numbers >= 0 (empty: the reference's)")
        check.at_least("embed_weight", "discrimination_weight")


def block_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The feature map after each block's activation, then the final map of `model.features`."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ConfigError(
            f"CAFE needs a network with a `features` sequence (convnet, vgg11, alexnet, lenet); "
            f"{type(model).__name__} has none: use model.name=convnet"
        )
    mods = list(features)
    out = []
    for i, module in enumerate(mods):
        x = module(x)
        if isinstance(module, ACTIVATIONS) and i < len(mods) - 1:
            out.append(x)
    out.append(x)
    return out


def default_layer_weights(n: int) -> list[float]:
    """The reference's weights for n feature maps: 1.0 for the last two, 0.1 before."""
    return [0.1] * max(0, n - 2) + [1.0] * min(n, 2)


def class_means(x: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """[C, ...]: the mean of each class's consecutive block of `counts[c]` rows."""
    return torch.stack([part.mean(dim=0) for part in x.split(counts)])


def layer_feature_loss(
    real: list[torch.Tensor],
    syn: list[torch.Tensor],
    real_counts: list[int],
    syn_counts: list[int],
    weights: list[float],
) -> torch.Tensor:
    """sum_l w_l sum_c ||mean f_l(real_c) - mean f_l(syn_c)||^2 (layer-wise alignment)."""
    total = syn[0].new_zeros(())
    for w, fr, fs in zip(weights, real, syn, strict=True):
        diff = class_means(fs, syn_counts) - class_means(fr, real_counts)
        total = total + w * (diff**2).sum()
    return total


def discrimination_loss(
    real_emb: torch.Tensor, real_labels: torch.Tensor, syn_centres: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy (summed) of real embeddings classified by their inner products with the
    synthetic class centres: synthetic classes must stay separable for real data."""
    return F.cross_entropy(real_emb @ syn_centres.t(), real_labels, reduction="sum")


class FeatureAlignment(InnerLoopObjective):
    """CAFE's objective on DC's inner-loop network."""

    def __init__(self, cfg: CAFEConfig, ctx: ObjectiveContext) -> None:
        super().__init__()
        self.cfg, self.ctx = cfg, ctx
        self.net = InnerLoopNetwork(cfg, ctx)
        self.steps_per_iteration = self.net.outer_loop
        probe = ctx.build(0).eval()
        shape = (1, ctx.in_channels, *([ctx.image_size] * ctx.spatial_dims))
        with torch.no_grad():
            n_maps = len(block_features(probe, torch.zeros(shape, device=ctx.device)))
        self.weights = list(cfg.layer_weights) or default_layer_weights(n_maps)
        if len(self.weights) != n_maps:
            raise ConfigError(
                f"option layer_weights has {len(self.weights)} entries but the network gives "
                f"{n_maps} feature maps; give {n_maps} weights or [] for the reference ones"
            )

    def loss(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real: RealSampler,
        generator: torch.Generator,
        step: int,
    ) -> torch.Tensor:
        cfg = self.cfg
        model = self.net.at(step, generator)
        reals, syns = [], []
        for c in range(self.ctx.num_classes):
            x_real = real(c, cfg.batch_real, generator)
            x_syn = images[self.ctx.class_slice(c)]
            x_real, x_syn = self.ctx.siamese(x_real, x_syn, generator)
            reals.append(x_real)
            syns.append(x_syn)
        real_counts = [x.shape[0] for x in reals]
        syn_counts = [x.shape[0] for x in syns]
        real_labels = torch.arange(len(reals), device=images.device).repeat_interleave(
            torch.tensor(real_counts, device=images.device)
        )
        with torch.no_grad():
            f_real = block_features(model, torch.cat(reals))
        f_syn = block_features(model, torch.cat(syns))
        layers = layer_feature_loss(f_real, f_syn, real_counts, syn_counts, self.weights)
        real_emb = f_real[-1].flatten(1)
        centres = class_means(f_syn[-1].flatten(1), syn_counts)
        embed = ((centres - class_means(real_emb, real_counts)) ** 2).sum()
        disc = discrimination_loss(real_emb, real_labels, centres)
        self.metrics = {
            "layers": float(layers.detach()),
            "embed": float(embed.detach()),
            "discrimination": float(disc.detach()),
        }
        return layers + cfg.embed_weight * embed + cfg.discrimination_weight * disc


def build(cfg: CAFEConfig, ctx: ObjectiveContext) -> FeatureAlignment:
    return FeatureAlignment(cfg, ctx)


METHOD = objective_method("cafe", "Wang et al., CVPR 2022", CAFEConfig, build)
