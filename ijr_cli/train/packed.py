"""One training step of a PACK: K runs of one architecture stepped together on a `stack.ModelStack`.

Each member takes exactly the step of its sequential run (`train.step.train_step`): its own minibatch indices,
augmentation, mixup draw and EJR direction u from its own seeded streams (`step.make_batch`, `ejr.logit_direction`,
called per member), its own label smoothing, target scale, SAM rho, EJR lambda/rho/mu, learning rate, momentum and
weight decay. The arithmetic is batched: one vmapped forward, one backward of sum_k L_k (members are independent,
so it returns every member's own gradient), a per-member SAM/EJR perturbation and torch's SGD written on the stacked
tensors (`optim.stacked_sgd_step`). Full-batch GD without augmentation or mixup shares the inputs (vmap in_dims None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

from ijr_cli.data import Dataset, chunks
from ijr_cli.objectives import MemberObjectives
from ijr_cli.optim import stacked_sam_perturbation, stacked_sgd_step
from ijr_cli.stack import ModelStack
from ijr_cli.train import ejr
from ijr_cli.train.step import StepSpec, make_batch

# what every member of a pack must share: the step's control flow and tensor shapes
SHARED_STEP_FIELDS = ("sam", "sam_adaptive", "ejr", "grad_chunk", "batch_size", "loss kind", "num_classes")


@dataclass
class PackedSpec:
    """The members' own step specs and their per-member numbers as (K,) tensors on the device."""

    specs: List[StepSpec]
    objectives: MemberObjectives
    data: List[Dataset]  # each member's data (one object when their inputs are the same)
    sam: bool
    sam_adaptive: bool
    ejr: Optional[str]
    grad_chunk: Optional[int]
    sam_rho: torch.Tensor
    lambda_reg: torch.Tensor
    rho_reg: torch.Tensor
    mu_reg: torch.Tensor

    @classmethod
    def of(cls, specs: Sequence[StepSpec], data: Sequence[Dataset], device, dtype) -> "PackedSpec":
        for name, values in shared_values(specs).items():
            if len(set(values)) != 1:
                raise ValueError(f"the members of a pack share {name}, got {sorted(set(map(str, values)))}")
        first = specs[0]
        as_tensor = lambda values: torch.tensor(values, device=device, dtype=dtype)  # noqa: E731
        return cls(
            specs=list(specs),
            objectives=MemberObjectives.of([s.objective for s in specs], device, dtype),
            data=list(data),
            sam=first.sam_rho is not None,
            sam_adaptive=first.sam_adaptive,
            ejr=first.ejr,
            grad_chunk=first.grad_chunk,
            sam_rho=as_tensor([s.sam_rho or 0.0 for s in specs]),
            lambda_reg=as_tensor([s.lambda_reg for s in specs]),
            rho_reg=as_tensor([s.rho_reg for s in specs]),
            mu_reg=as_tensor([s.mu_reg for s in specs]),
        )

    @property
    def shared_inputs(self) -> bool:
        """Every member sees the same inputs at every step: full batch, no augmentation, no mixup, one dataset."""
        return (
            all(s.sampler.full_batch and not s.augment and s.mixup_alpha == 0 for s in self.specs)
            and len({id(d) for d in self.data}) == 1
        )


def shared_values(specs: Sequence[StepSpec]) -> dict:
    """The step settings every member of a pack must share, member by member (`SHARED_STEP_FIELDS`)."""
    values = (
        [s.sam_rho is not None for s in specs],
        [s.sam_adaptive for s in specs],
        [s.ejr for s in specs],
        [s.grad_chunk for s in specs],
        [s.sampler.batch_size for s in specs],
        [s.objective.kind for s in specs],
        [s.objective.num_classes for s in specs],
    )
    return dict(zip(SHARED_STEP_FIELDS, values))


@dataclass
class Batch:
    x: torch.Tensor  # (B, ...) shared or (K, B, ...)
    y: torch.Tensor  # (B,) or (K, B)
    targets: Optional[torch.Tensor]  # (K, B, C) soft targets, or None
    per_member: bool

    @property
    def size(self) -> int:
        return int(self.y.shape[-1])

    def slice(self, sl: slice) -> "Batch":
        pick = (lambda t: t[:, sl]) if self.per_member else (lambda t: t[sl])
        y = self.y[:, sl] if self.y.dim() == 2 else self.y[sl]
        return Batch(pick(self.x), y, None if self.targets is None else self.targets[:, sl], self.per_member)


def packed_batch(step: int, ps: PackedSpec) -> Batch:
    """The members' batches of 0-based `step`, each `step.make_batch` of its own spec (so equal to its sequential
    run's), stacked; the full training set itself when the inputs are shared. With mixup in any member, every member
    gets soft targets (a member without mixup: its smoothed one-hot targets, the same loss)."""
    if ps.shared_inputs:
        return Batch(ps.data[0].x_train, ps.data[0].y_train, None, False)
    made = [make_batch(d, step, s) for d, s in zip(ps.data, ps.specs)]
    stacked = (lambda ts: ts[0][None]) if len(made) == 1 else torch.stack  # (one member: a view, no copy)
    x = stacked([m[0] for m in made])
    y = stacked([m[1] for m in made])
    targets = None
    if any(m[2] is not None for m in made):
        targets = stacked(
            [t if t is not None else s.objective.soft_targets(yk, x.dtype) for (_, yk, t), s in zip(made, ps.specs)]
        )
    return Batch(x, y, targets, True)


def _losses(stack: ModelStack, ps: PackedSpec, batch: Batch, z: Optional[torch.Tensor] = None) -> torch.Tensor:
    z = stack(batch.x, batch.per_member) if z is None else z
    return ps.objectives.sum(z, batch.y, batch.targets)


def _grad(output: torch.Tensor, stack: ModelStack, **kwargs):
    return torch.autograd.grad(output, stack.params, materialize_grads=True, **kwargs)


def _member_dot(z_sum: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """sum_k z_k . u_k for (K, C) tensors: one scalar whose gradient in theta_k is member k's own."""
    return (z_sum * u).sum()


def stacked_gradients(
    stack: ModelStack, ps: PackedSpec, batch: Batch, logit_weight: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """`step.accumulate_gradients` for every member: the gradient of each mean batch loss (+ w_k^T <z_k>_B) into
    the stack's `.grad`, in chunks of at most `grad_chunk` examples; returns the members' losses (K,)."""
    n = batch.size
    if (ps.grad_chunk is None or ps.grad_chunk >= n) and logit_weight is None:
        losses = _losses(stack, ps, batch) / n
        losses.sum().backward()
        return losses.detach()
    total = None
    for sl in chunks(n, ps.grad_chunk):
        part = batch.slice(sl)
        z = stack(part.x, part.per_member)
        losses = _losses(stack, ps, part, z)
        if logit_weight is not None:
            losses = losses + (z.sum(dim=1) * logit_weight).sum(dim=1)
        losses = losses / n
        losses.sum().backward()
        total = losses.detach() if total is None else total + losses.detach()
    return total


def _squared_norms(tensors, k: int) -> torch.Tensor:
    return torch.stack([t.reshape(k, -1).square().sum(dim=1) for t in tensors]).sum(dim=0)


def stacked_penalty_backward(stack: ModelStack, ps: PackedSpec, batch: Batch, u: torch.Tensor) -> torch.Tensor:
    """`ejr.penalty_backward` for every member: grad [L_B + lambda_k ||<J_k>_B u_k||^2]; returns L_B (K,)."""
    n, k = batch.size, stack.k
    if ps.grad_chunk is None or ps.grad_chunk >= n:
        z = stack(batch.x, batch.per_member)
        losses = _losses(stack, ps, batch, z) / n
        g = _grad(_member_dot(z.mean(dim=1), u), stack, create_graph=True)
        (losses + ps.lambda_reg * _squared_norms(g, k)).sum().backward()
        return losses.detach()
    g, total = None, None
    for sl in chunks(n, ps.grad_chunk):  # pass A: g and the loss gradient
        part = batch.slice(sl)
        z = stack(part.x, part.per_member)
        piece = _grad(_member_dot(z.sum(dim=1), u) / n, stack, retain_graph=True)
        losses = _losses(stack, ps, part, z) / n
        losses.sum().backward()
        g = list(piece) if g is None else torch._foreach_add(g, piece)
        total = losses.detach() if total is None else total + losses.detach()
    for sl in chunks(n, ps.grad_chunk):  # pass B: 2 lambda sum_c grad (g_c . g), g held fixed
        part = batch.slice(sl)
        piece = _grad(_member_dot(stack(part.x, part.per_member).sum(dim=1), u) / n, stack, create_graph=True)
        dots = torch.stack([(a * b).reshape(k, -1).sum(dim=1) for a, b in zip(piece, g)]).sum(dim=0)
        (2.0 * ps.lambda_reg * dots).sum().backward()
    return total


def stacked_logit_direction_gradient(stack: ModelStack, ps: PackedSpec, batch: Batch, u: torch.Tensor):
    """`ejr.logit_direction_gradient` for every member: g_k = <J_k>_B u_k and the batch losses (values only)."""
    n = batch.size
    g, total = None, None
    for sl in chunks(n, ps.grad_chunk):
        part = batch.slice(sl)
        z = stack(part.x, part.per_member)
        piece = _grad(_member_dot(z.sum(dim=1), u) / n, stack)
        with torch.no_grad():
            value = _losses(stack, ps, part, z) / n
        if g is None:
            g, total = list(piece), value
        else:
            torch._foreach_add_(g, piece)
            total = total + value
    return g, total


def stacked_perturbed_gradient(stack: ModelStack, e: List[torch.Tensor], gradient: Callable[[], torch.Tensor]):
    """`step.perturbed_gradient` for every member: `.grad` replaced by the gradient at theta + e, theta restored."""
    with torch.no_grad():
        torch._foreach_add_(stack.params, e)
    stack.zero_grad()
    try:
        value = gradient()
    finally:
        with torch.no_grad():
            torch._foreach_sub_(stack.params, e)
    return value


class StackedSGD:
    """torch's SGD for every member of a stack (`optim.stacked_sgd_step`): per-member momentum and weight decay,
    the momentum buffers stacked (none when every member's momentum is 0)."""

    def __init__(self, stack: ModelStack, momentum: Sequence[float], weight_decay: Sequence[float], nesterov: bool):
        p0 = stack.params[0]
        self.stack, self.nesterov = stack, nesterov
        self.momentum = torch.tensor(list(momentum), device=p0.device, dtype=p0.dtype)
        wd = torch.tensor(list(weight_decay), device=p0.device, dtype=p0.dtype)
        self.weight_decay = wd if any(w != 0 for w in weight_decay) else None
        self.buffers = [torch.zeros_like(p) for p in stack.params] if any(m != 0 for m in momentum) else None

    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        """One step for the members where `active` (K,) is 1 (the others, 0, get lr 0: frozen exactly)."""
        stacked_sgd_step(self.stack.params, self.buffers, lr * active, self.momentum, self.weight_decay, self.nesterov)


def packed_train_step(
    stack: ModelStack, optimizer: StackedSGD, step: int, ps: PackedSpec, lr: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    """One step of every member at 0-based `step` (`train.step.train_step`, member by member); returns the batch
    losses (K,) at the parameters before the step. Members where `active` (K,) is 0 are not updated."""
    batch = packed_batch(step, ps)
    u = None
    if ps.ejr is not None:
        c, dtype = ps.objectives.num_classes, batch.x.dtype
        u = torch.stack([ejr.logit_direction(c, s.seed, step, s.generator, dtype) for s in ps.specs])
    stack.zero_grad()
    if ps.ejr in ("ejr_sam", "ejr_v2"):
        g, losses = stacked_logit_direction_gradient(stack, ps, batch, u)
        weight = ps.mu_reg[:, None] * u if ps.ejr == "ejr_v2" else None
        e = stacked_sam_perturbation(stack.params, g, ps.rho_reg)
        stacked_perturbed_gradient(stack, e, lambda: stacked_gradients(stack, ps, batch, weight))
    else:

        def gradient() -> torch.Tensor:
            if ps.ejr == "ejr":
                return stacked_penalty_backward(stack, ps, batch, u)
            return stacked_gradients(stack, ps, batch)

        losses = gradient()
        if ps.sam:
            e = stacked_sam_perturbation(stack.params, [p.grad for p in stack.params], ps.sam_rho, ps.sam_adaptive)
            stacked_perturbed_gradient(stack, e, gradient)
    optimizer.step(lr, active)
    return losses
