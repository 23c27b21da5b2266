"""Optimizers (SGD / full-batch GD / SAM), learning-rate schedules, and the stability threshold for a step size.

GD is torch's SGD fed the full training set in stored order (the batching lives in `data.BatchSampler`).
SAM (Foret et al. 2021) is a two-pass step implemented in `train.train_step` around the same base SGD; this module
only holds its perturbation, which is a pure function of the gradients.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

import torch

from ijr_cli.core.config import OptimizerConfig, ScheduleConfig, schema_default


def build_sgd(
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = schema_default(OptimizerConfig, "momentum"),
    nesterov: bool = schema_default(OptimizerConfig, "nesterov"),
    weight_decay: float = schema_default(OptimizerConfig, "weight_decay"),
) -> torch.optim.SGD:
    """torch's SGD: heavy-ball v <- beta v + g (+ wd theta), theta <- theta - lr v (Nesterov: g + beta v)."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def lr_factor(
    step: int,
    total_steps: int,
    name: str,
    *,
    gamma: float = schema_default(ScheduleConfig, "gamma"),
    milestones: Sequence[float] = schema_default(ScheduleConfig, "milestones"),
    warmup_steps: int = schema_default(ScheduleConfig, "warmup_steps"),
    min_lr_factor: float = schema_default(ScheduleConfig, "min_lr_factor"),
) -> float:
    """Multiplier of the base learning rate for 0-based `step` of `total_steps`.

    constant: 1. step: gamma ** (number of milestones m with step >= round(m * total_steps)) (paper 000's WRN:
    x0.2 at 30/60/80 %). cosine: min + (1 - min) (1 + cos(pi step / total)) / 2. Warm-up multiplies by
    (step + 1) / warmup_steps for the first `warmup_steps` steps.
    """
    if name == "constant":
        f = 1.0
    elif name == "step":
        f = gamma ** sum(step >= round(m * total_steps) for m in milestones)
    elif name == "cosine":
        t = min(step / max(total_steps, 1), 1.0)
        f = min_lr_factor + (1.0 - min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        raise ValueError(f"unknown schedule {name!r}")
    if warmup_steps and step < warmup_steps:
        f *= (step + 1) / warmup_steps
    return f


def stability_threshold(
    lr: float,
    momentum: float = schema_default(OptimizerConfig, "momentum"),
    nesterov: bool = schema_default(OptimizerConfig, "nesterov"),
) -> float:
    """Sharpness above which GD on a quadratic diverges (SCIENCE.md `threshold`).

    GD/SGD: 2/lr; heavy ball with beta: (2 + 2 beta)/lr; Nesterov: (2 + 2 beta)/(lr (1 + 2 beta)).
    """
    if momentum == 0:
        return 2.0 / lr
    if nesterov:
        return (2.0 + 2.0 * momentum) / (lr * (1.0 + 2.0 * momentum))
    return (2.0 + 2.0 * momentum) / lr


def sam_perturbation(
    params: List[torch.Tensor],
    grads: List[torch.Tensor],
    rho: float,
    adaptive: bool = schema_default(OptimizerConfig, "adaptive"),
) -> List[torch.Tensor]:
    """SAM's ascent step e = rho g / ||g|| (ASAM: e = rho T^2 g / ||T g|| with T = |theta|), all on the device.

    A zero gradient gives e = 0 (the 1e-12 guard never divides by zero and needs no host sync).
    """
    if adaptive:
        scaled = torch._foreach_mul(grads, [p.abs() for p in params])
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(scaled)))
        e = torch._foreach_mul(scaled, [p.abs() for p in params])
    else:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        e = [g.clone() for g in grads]
    scale = rho / (norm + 1e-12)
    torch._foreach_mul_(e, scale)
    return e


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1), broadcasting against a stacked tensor (K, *shape)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def stacked_sgd_step(
    params: List[torch.Tensor],
    buffers: Optional[List[torch.Tensor]],
    lr: torch.Tensor,
    momentum: torch.Tensor,
    weight_decay: Optional[torch.Tensor],
    nesterov: bool,
) -> None:
    """torch's SGD step (`build_sgd`) on stacked tensors (K, *shape), in place, with per-member lr, momentum and weight
    decay (K,): d = g + wd theta; v <- beta v + d (v starts at 0, so the first step sets v = d as torch does);
    d = d + beta v (Nesterov) or v; theta <- theta - lr d. A member with lr 0 keeps its parameters exactly (how a
    diverged or finished member is frozen). `buffers`: the momentum, None when every beta is 0; `weight_decay`:
    None when every member's is 0 (no pass for it)."""
    for i, p in enumerate(params):
        d = p.grad
        if weight_decay is not None:
            d = torch.addcmul(d, p, _per_member(weight_decay, p))
        if buffers is not None:
            buf, beta = buffers[i], _per_member(momentum, p)
            buf.mul_(beta).add_(d)
            d = torch.addcmul(d, buf, beta) if nesterov else buf
        p.addcmul_(d, _per_member(lr, p), value=-1.0)


def stacked_sam_perturbation(
    params: List[torch.Tensor], grads: List[torch.Tensor], rho: torch.Tensor, adaptive: bool = False
) -> List[torch.Tensor]:
    """`sam_perturbation` for each member of a stack: e_k = rho_k g_k / ||g_k|| (ASAM: rho_k T^2 g_k / ||T g_k||),
    norms over each member's own parameters."""
    k = params[0].shape[0]
    scaled = [g * p.abs() for g, p in zip(grads, params)] if adaptive else grads
    norm = torch.stack([s.reshape(k, -1).square().sum(dim=1) for s in scaled]).sum(dim=0).sqrt()
    e = [s * p.abs() for s, p in zip(scaled, params)] if adaptive else [g.clone() for g in grads]
    scale = rho / (norm + 1e-12)
    return [t * _per_member(scale, t) for t in e]
