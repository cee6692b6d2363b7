"""The student unroll: N SGD steps of a network on the synthetic images, and its exact gradient.

Forward (every method): w_{k+1} = w_k - alpha * g_k,  g_k = grad_w CE(f(w_k, A_k(X[b_k])), y[b_k])
with minibatch b_k and augmentation draw A_k fixed per step by a `StepPlan`.

Two ways to get dL/dX, dL/dalpha and dL/dy for a loss L of any student states {w_k}:
- `unroll_graph`: keep the autograd graph of all N steps (what the references do); memory grows
  with N x batch_syn x activations.
- `unroll_states` + `adjoint_backward`: keep only the N+1 parameter vectors and each step's plan,
  then walk back one step at a time, rebuilding that step's graph and carrying the adjoint
      lam_k = lam_{k+1} - alpha * H_k lam_{k+1} + dL/dw_k
  with a Hessian-vector product per step. This is the same gradient (exact reverse mode by
  recomputation), unlike TESLA's constant-memory trick which drops the cross-step terms; peak
  memory is one step's graph plus the stored vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from meddistill.augment.dsa import DSA, DSADraw
from meddistill.models.functional import ParamLayout, functional_forward


@dataclass
class StepPlan:
    """What one inner step sees: which synthetic images and which augmentation draw."""

    indices: torch.Tensor
    draw: DSADraw | None


def plan_steps(
    num_images: int,
    num_steps: int,
    batch_syn: int,
    generator: torch.Generator,
    dsa: DSA | None,
    device: torch.device | str,
) -> list[StepPlan]:
    """Minibatches as consecutive chunks of random permutations (the MTT convention), and an
    independent, per-sample DSA draw for every step (not siamese), all from `generator`."""
    batch = min(int(batch_syn), num_images)
    plans: list[StepPlan] = []
    order = torch.empty(0, dtype=torch.long)
    for _ in range(num_steps):
        if order.numel() < batch:
            order = torch.cat([order, torch.randperm(num_images, generator=generator)])
        idx, order = order[:batch], order[batch:]
        draw = None
        if dsa is not None and not dsa.is_identity:
            draw = dsa.sample(batch, generator, shared=False, device=device)
        plans.append(StepPlan(idx.to(device), draw))
    return plans


class StudentProblem:
    """The inner objective: cross-entropy of a network at flat parameters on a planned batch."""

    def __init__(self, model: nn.Module, dsa: DSA | None = None):
        self.model = model
        self.layout = ParamLayout.from_model(model)
        self.dsa = dsa

    def batch_loss(
        self, w: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, plan: StepPlan
    ) -> torch.Tensor:
        """CE on the step's minibatch. Soft labels are [N, C] LOGITS (the DATM convention: the
        learnable quantity is a logit vector, the target distribution is its softmax)."""
        x = images.index_select(0, plan.indices)
        if plan.draw is not None and self.dsa is not None:
            x = self.dsa.apply(x, plan.draw)
        logits = functional_forward(self.model, w, x, layout=self.layout)
        y = labels.index_select(0, plan.indices)
        if y.dim() == 2:
            return -(F.softmax(y, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        return F.cross_entropy(logits, y)

    def grad(
        self,
        w: torch.Tensor,
        images: torch.Tensor,
        labels: torch.Tensor,
        plan: StepPlan,
        create_graph: bool,
    ) -> torch.Tensor:
        """g = dCE/dw at w (keeping the graph to images/labels/w when create_graph)."""
        if not w.requires_grad:
            w = w.detach().requires_grad_(True)
        loss = self.batch_loss(w, images, labels, plan)
        (g,) = torch.autograd.grad(loss, w, create_graph=create_graph)
        return g


def unroll_graph(
    problem: StudentProblem,
    w0: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: torch.Tensor,
    plans: list[StepPlan],
) -> list[torch.Tensor]:
    """States w_0..w_N with the whole graph kept (differentiable w.r.t. images, labels, lr)."""
    states = [w0.detach().requires_grad_(True)]
    for plan in plans:
        w = states[-1]
        g = problem.grad(w, images, labels, plan, create_graph=True)
        states.append(w - syn_lr * g)
    return states


def unroll_states(
    problem: StudentProblem,
    w0: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: float,
    plans: list[StepPlan],
) -> list[torch.Tensor]:
    """States w_0..w_N as plain tensors (no graph): the forward pass of the adjoint mode."""
    images, labels = images.detach(), labels.detach()
    states = [w0.detach().clone()]
    for plan in plans:
        w = states[-1]
        g = problem.grad(w, images, labels, plan, create_graph=False)
        states.append((w - syn_lr * g).detach())
    return states


@dataclass
class StudentGradients:
    """dL/d(images), dL/d(alpha) and dL/d(labels) (None for hard labels)."""

    images: torch.Tensor
    syn_lr: torch.Tensor
    labels: torch.Tensor | None


def adjoint_backward(
    problem: StudentProblem,
    states: list[torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: float,
    plans: list[StepPlan],
    state_grads: dict[int, torch.Tensor],
) -> StudentGradients:
    """Exact reverse pass by recomputation, given dL/dw_k for the states the loss used.

    Per step k (from N-1 down to 0), with lam = dL/dw_{k+1}:
      dL/dalpha -= <g_k, lam>;  dL/dX -= alpha * (dg_k/dX)^T lam;  lam <- lam - alpha * H_k lam
    where (dg_k/dX)^T lam and H_k lam come from ONE double-backward of <g_k, lam>.
    """
    n = len(plans)
    soft = labels.is_floating_point() and labels.dim() == 2
    x = images.detach().requires_grad_(True)
    y = labels.detach().requires_grad_(True) if soft else labels.detach()
    lam = torch.zeros_like(states[-1])
    grad_x = torch.zeros_like(x)
    grad_y = torch.zeros_like(y) if soft else None
    grad_lr = torch.zeros((), dtype=states[-1].dtype, device=states[-1].device)
    # Steps after the last state the loss uses carry no adjoint (e.g. ATT's argmin step < N).
    last = max((k for k in state_grads if 0 < k <= n), default=0)
    for k in range(last, 0, -1):
        if k in state_grads:
            lam = lam + state_grads[k].detach()
        w = states[k - 1].detach().requires_grad_(True)
        g = problem.grad(w, x, y, plans[k - 1], create_graph=True)
        grad_lr = grad_lr - torch.dot(g.detach(), lam)
        inputs = [w, x] + ([y] if soft else [])
        parts = torch.autograd.grad(torch.dot(g, lam), inputs, allow_unused=True)
        hvp, gx = parts[0], parts[1]
        if gx is not None:
            grad_x = grad_x - syn_lr * gx
        if soft and parts[2] is not None:
            grad_y = grad_y - syn_lr * parts[2]
        lam = lam - syn_lr * (hvp if hvp is not None else torch.zeros_like(lam))
    return StudentGradients(grad_x, grad_lr, grad_y)


LossOfStates = Callable[[dict[int, torch.Tensor]], torch.Tensor]


def student_gradients(
    problem: StudentProblem,
    w0: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: torch.Tensor,
    plans: list[StepPlan],
    select_states: Callable[[list[torch.Tensor]], list[int]],
    loss_of_states: LossOfStates,
    mode: str = "adjoint",
) -> tuple[torch.Tensor, StudentGradients, list[torch.Tensor]]:
    """Unroll, evaluate L on the selected states, and return (L, gradients, detached states).

    `select_states(states)` sees detached states and names the indices L needs (e.g. [N//2, N]
    for HoP-TM, the argmin step for ATT); `loss_of_states` maps {k: w_k} to the scalar L.
    Both modes call them identically, so they give the same numbers up to rounding.
    """
    if mode == "unroll":
        x = images.detach().requires_grad_(True)
        soft = labels.is_floating_point() and labels.dim() == 2
        y = labels.detach().requires_grad_(True) if soft else labels.detach()
        lr = syn_lr.detach().requires_grad_(True)
        states = unroll_graph(problem, w0, x, y, lr, plans)
        detached = [s.detach() for s in states]
        picked = select_states(detached)
        loss = loss_of_states({k: states[k] for k in picked})
        inputs = [x, lr] + ([y] if soft else [])
        parts = torch.autograd.grad(loss, inputs, allow_unused=True)
        gx = parts[0] if parts[0] is not None else torch.zeros_like(x)
        glr = parts[1] if parts[1] is not None else torch.zeros_like(lr)
        gy = (parts[2] if parts[2] is not None else torch.zeros_like(y)) if soft else None
        return loss.detach(), StudentGradients(gx, glr, gy), detached
    if mode != "adjoint":
        raise ValueError(f"gradient mode must be 'unroll' or 'adjoint', got {mode!r}")
    lr_value = float(syn_lr.detach())
    states = unroll_states(problem, w0, images, labels, lr_value, plans)
    picked = select_states(states)
    leaves = {k: states[k].detach().requires_grad_(True) for k in picked}
    loss = loss_of_states(leaves)
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    state_grads = {k: g for k, g in zip(leaves, grads, strict=True) if g is not None and k > 0}
    result = adjoint_backward(problem, states, images, labels, lr_value, plans, state_grads)
    return loss.detach(), result, states
