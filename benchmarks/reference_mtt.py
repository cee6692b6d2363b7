"""One MTT iteration written the way the public reference implementations do it, in plain PyTorch.

Written from the MTT paper (Cazenavette et al., CVPR 2022, Alg. 1 and Eq. 2), not copied: a
ConvNet-3 (conv3x3 -> instance norm (GroupNorm(C, C), affine) -> ReLU -> avgpool2, x3, linear)
wrapped in a 'ReparamModule' whose parameters live in ONE flat vector; every forward re-slices
the vector it is given into views and puts them back into the layers. The student takes
`syn_steps` SGD steps with create_graph=True through all of them, then
L = ||w_N - w_target||^2 / ||w_start - w_target||^2 is backpropagated to the images and the
learnable step size.

It is the yardstick for `matching.py --reference`: same shapes, same start/target vectors and,
when DSA is on, the same per-step DSA draws from `meddistill.augment` (drawn from the generator
in the same order as `meddistill.matching.student.plan_steps`), so its gradient must equal the
engine's 'unroll' gradient up to rounding. Nothing else from meddistill is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from meddistill.augment import DSA


class ConvNet3(nn.Module):
    """The references' ConvNet (depth 3, 'instancenorm' = GroupNorm(C, C)); 28 px -> 14 -> 7 -> 3."""

    def __init__(self, channels: int, classes: int, width: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        size, c_in = image_size, channels
        for _ in range(3):
            layers += [
                nn.Conv2d(c_in, width, kernel_size=3, padding=1),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=False),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            c_in, size = width, size // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class ReparamModule(nn.Module):
    """Holds a module's parameters as one flat vector; forward(x, flat) runs it at `flat`.

    The references' trick: the layers' own Parameters are removed, and before every call the
    given flat vector is sliced into views that are set as the layers' weight/bias attributes,
    so the output is differentiable w.r.t. that flat vector (to any order).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.slots: list[tuple[nn.Module, str, torch.Size]] = []
        flat = []
        for sub in module.modules():
            for name, p in list(sub.named_parameters(recurse=False)):
                self.slots.append((sub, name, p.shape))
                flat.append(p.detach().reshape(-1))
                del sub._parameters[name]
        self.flat_param = nn.Parameter(torch.cat(flat))

    def forward(self, x: torch.Tensor, flat_param: torch.Tensor) -> torch.Tensor:
        offset = 0
        for sub, name, shape in self.slots:
            n = shape.numel()
            setattr(sub, name, flat_param[offset : offset + n].view(shape))
            offset += n
        return self.module(x)


def mtt_iteration(
    net: ReparamModule,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: torch.Tensor,
    w_start: torch.Tensor,
    w_target: torch.Tensor,
    syn_steps: int,
    batch_syn: int,
    generator: torch.Generator,
    dsa: DSA | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One distillation iteration; returns (loss, dL/dimages, dL/dsyn_lr).

    `images` and `syn_lr` are leaves with requires_grad; their .grad is reset here. Minibatches
    are consecutive chunks of random permutations, one DSA draw per step (not siamese).
    """
    images.grad, syn_lr.grad = None, None
    num = images.shape[0]
    batch = min(batch_syn, num)
    student = [w_start.detach().clone().requires_grad_(True)]
    order = torch.empty(0, dtype=torch.long)
    for _ in range(syn_steps):
        if order.numel() < batch:
            order = torch.cat([order, torch.randperm(num, generator=generator)])
        idx, order = order[:batch], order[batch:]
        idx = idx.to(images.device)
        x = images[idx]
        if dsa is not None and not dsa.is_identity:
            x = dsa.apply(x, dsa.sample(batch, generator, shared=False, device=images.device))
        ce = F.cross_entropy(net(x, flat_param=student[-1]), labels[idx])
        (grad,) = torch.autograd.grad(ce, student[-1], create_graph=True)
        student.append(student[-1] - syn_lr * grad)
    loss = (student[-1] - w_target).pow(2).sum() / (w_start - w_target).pow(2).sum()
    loss.backward()
    return loss.detach(), images.grad, syn_lr.grad
