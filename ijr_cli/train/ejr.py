"""Explicit Jacobian Regularisation (paper 000 §5.2 and App. N): the pieces of its three training steps.

u is drawn uniformly from the unit sphere S^{C-1} of logit space, once per minibatch B, and
g = <J>_B u = grad_theta (u^T <z>_B) (one backward of the mean logits projected on u).

- `ejr`: the gradient of L_B + lambda_reg ||<J>_B u||^2 (App. N Eq. 36-37 with the single-sample estimate
  C E_u ||<J> u||^2 = ||<J>||_F^2, so E_u of the penalty is lambda_reg ||<J>_B||_F^2 / C). Double backward.
- `ejr_sam` (Eq. 38): the gradient of L_B at theta + rho_reg g/||g||, applied at theta.
- `ejr_v2` (Eq. 39): the same with L_B + mu_reg u^T <z>_B at the perturbed point.

The training step that strings these together (and the perturbed second pass, shared with SAM) is in `train`.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ijr_cli.data import chunks, stream_seed
from ijr_cli.models import frozen_batchnorm_statistics
from ijr_cli.objectives import Objective


def logit_direction(
    num_classes: int, seed: int, step: int, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """u ~ U(S^{C-1}) for 0-based `step`: a normalised standard normal vector (rotation invariant, hence uniform),
    drawn on the generator's device from the (seed, "ejr_u", step) stream, so a resumed run draws the same u."""
    generator.manual_seed(stream_seed(seed, "ejr_u", step))
    u = torch.randn(num_classes, generator=generator, device=generator.device, dtype=dtype)
    return u / torch.linalg.vector_norm(u)


def trainable_parameters(model: nn.Module) -> List[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _grad(output: torch.Tensor, params: List[nn.Parameter], **kwargs) -> Tuple[torch.Tensor, ...]:
    return torch.autograd.grad(output, params, materialize_grads=True, **kwargs)


def logit_direction_gradient(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: Optional[torch.Tensor],
    u: torch.Tensor,
    chunk: Optional[int] = None,
) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """g = <J>_B u = grad_theta (u^T <z>_B) (one forward and one backward per chunk) and the batch loss L_B at
    the same forward (a value only, no gradient). BatchNorm in train mode updates its statistics here."""
    params = trainable_parameters(model)
    n = x.shape[0]
    g: Optional[List[torch.Tensor]] = None
    loss = None
    for sl in chunks(n, chunk):
        z = model(x[sl])
        part = _grad((z.sum(0) @ u) / n, params)
        with torch.no_grad():
            value = objective.sum(z, y[sl], None if targets is None else targets[sl]) / n
        if g is None:
            g, loss = list(part), value
        else:
            torch._foreach_add_(g, part)
            loss = loss + value
    return g, loss


def _squared_norm(tensors) -> torch.Tensor:
    return sum((t * t).sum() for t in tensors)


def penalty_backward(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: Optional[torch.Tensor],
    u: torch.Tensor,
    lambda_reg: float,
    chunk: Optional[int] = None,
) -> torch.Tensor:
    """Accumulate grad_theta [L_B + lambda_reg ||<J>_B u||^2] into `.grad`; returns L_B (detached).

    One chunk: one forward, g with create_graph, one backward through loss and penalty together.
    Several chunks: ||g||^2 is a square of a sum over chunks, so g is accumulated first (pass A, which also
    takes the loss gradient and updates BN statistics) and then grad ||g||^2 = 2 sum_c grad (g_c . g) is taken
    chunk by chunk with g held fixed (pass B, BN statistics frozen).
    """
    params = trainable_parameters(model)
    n = x.shape[0]
    if chunk is None or chunk >= n:
        z = model(x)
        loss = objective.mean(z, y, targets)
        g = _grad(z.mean(0) @ u, params, create_graph=True)
        (loss + lambda_reg * _squared_norm(g)).backward()
        return loss.detach()
    g: Optional[List[torch.Tensor]] = None
    total = None
    for sl in chunks(n, chunk):
        z = model(x[sl])
        part = _grad((z.sum(0) @ u) / n, params, retain_graph=True)
        loss = objective.sum(z, y[sl], None if targets is None else targets[sl]) / n
        loss.backward()
        g = list(part) if g is None else torch._foreach_add(g, part)
        total = loss.detach() if total is None else total + loss.detach()
    with frozen_batchnorm_statistics(model):
        for sl in chunks(n, chunk):
            part = _grad((model(x[sl]).sum(0) @ u) / n, params, create_graph=True)
            (2.0 * lambda_reg * sum((a * b).sum() for a, b in zip(part, g))).backward()
    return total


def step_passes(variant: Optional[str], chunked: bool, sam: bool) -> dict:
    """Passes over the batch per training step (forward, backward, and backward through a gradient graph), as
    `train.train_step` performs them; `status.json` records them as the cost of the regulariser."""
    if variant == "ejr":
        f, b, d = (2, 3, 1) if chunked else (1, 1, 1)
    else:
        f, b, d = 1, 1, 0
    if variant in ("ejr_sam", "ejr_v2") or sam:  # a second, perturbed pass (forward + backward)
        f, b, d = (2 * f, 2 * b, 2 * d) if sam else (f + 1, b + 1, d)
    return {
        "forward": f,
        "backward": b,
        "double_backward": d,
        "extra_vs_plain": {"forward": f - 1, "backward": b - 1, "double_backward": d},
    }
