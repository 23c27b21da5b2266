"""One training step: plain, SAM, or one of the EJR variants, at a 0-based step of a run.

Every random draw of a step comes from a generator re-seeded with (seed, stream, step), so a resumed run repeats
an uninterrupted one exactly, and measurements (which never touch these generators) cannot change training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ijr_cli.core.config import OptimizerConfig, RegularizerConfig, TrainerConfig, schema_default
from ijr_cli.data import BatchSampler, Dataset, chunks, random_crop_flip, stream_seed
from ijr_cli.models import frozen_batchnorm_statistics
from ijr_cli.objectives import Objective, mixup, mixup_lambda
from ijr_cli.optim import sam_perturbation
from ijr_cli.train import ejr


@dataclass
class StepSpec:
    """Everything a training step needs besides model and optimizer, as plain values."""

    objective: Objective
    sampler: BatchSampler
    seed: int
    augment: bool = schema_default(RegularizerConfig, "augment")
    mixup_alpha: float = schema_default(RegularizerConfig, "mixup_alpha")
    grad_chunk: Optional[int] = schema_default(TrainerConfig, "grad_chunk")  # most examples per forward/backward
    sam_rho: Optional[float] = None  # None: a plain step
    sam_adaptive: bool = schema_default(OptimizerConfig, "adaptive")
    ejr: Optional[str] = None  # None | "ejr" | "ejr_sam" | "ejr_v2" (paper 000 App. N; see `ijr_cli.train.ejr`)
    lambda_reg: float = schema_default(RegularizerConfig, "lambda_reg")  # ejr: penalty weight
    rho_reg: float = schema_default(RegularizerConfig, "rho_reg")  # ejr_sam / ejr_v2: radius along <J>u
    mu_reg: float = schema_default(RegularizerConfig, "mu_reg")  # ejr_v2: weight of u^T <z> at the perturbed point
    generator: Optional[torch.Generator] = None  # re-seeded per step and stream; on the data's device

    def __post_init__(self):
        if self.generator is None:
            self.generator = torch.Generator(device=self.sampler.device)


def make_batch(data: Dataset, step: int, spec: StepSpec):
    """Inputs, labels and (with mixup) soft targets of 0-based `step`; full batch without an index copy."""
    idx = spec.sampler.indices(step)
    x = data.x_train if idx is None else data.x_train[idx]
    y = data.y_train if idx is None else data.y_train[idx]
    targets = None
    if spec.augment:
        spec.generator.manual_seed(stream_seed(spec.seed, "augment", step))
        x = random_crop_flip(x, spec.generator)
    if spec.mixup_alpha > 0:
        lam = mixup_lambda(spec.mixup_alpha, stream_seed(spec.seed, "mixup_lambda", step))
        spec.generator.manual_seed(stream_seed(spec.seed, "mixup", step))
        x, targets = mixup(x, spec.objective.soft_targets(y, x.dtype), lam, spec.generator)
    return x, y, targets


def accumulate_gradients(
    model: nn.Module,
    objective: Objective,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: Optional[torch.Tensor],
    grad_chunk: Optional[int],
    logit_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Backward of the mean batch loss, in chunks of at most `grad_chunk` examples; returns the loss (detached).

    Each chunk's summed loss is divided by the full batch size, so the gradient equals the one-pass gradient
    (with BatchNorm in train mode, each chunk normalises with its own statistics: "ghost BN").
    `logit_weight` w adds w^T <z>_B to the objective (ejr_v2's mu_reg u); the returned value then includes it.
    """
    n = x.shape[0]
    if (grad_chunk is None or grad_chunk >= n) and logit_weight is None:  # the common case, no slicing overhead
        loss = objective.mean(model(x), y, targets)
        loss.backward()
        return loss.detach()
    total = None
    for sl in chunks(n, grad_chunk):
        z = model(x[sl])
        loss = objective.sum(z, y[sl], None if targets is None else targets[sl])
        if logit_weight is not None:
            loss = loss + z.sum(0) @ logit_weight
        loss = loss / n
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def batch_gradient(model: nn.Module, spec: StepSpec, x, y, targets, u: Optional[torch.Tensor]) -> torch.Tensor:
    """Accumulate the gradient of the step's objective at the current parameters: the data loss, plus
    lambda_reg ||<J>_B u||^2 for `ejr`. Returns the batch loss L_B (detached)."""
    if spec.ejr == "ejr":
        return ejr.penalty_backward(model, spec.objective, x, y, targets, u, spec.lambda_reg, spec.grad_chunk)
    return accumulate_gradients(model, spec.objective, x, y, targets, spec.grad_chunk)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: Dataset, step: int, spec: StepSpec
) -> torch.Tensor:
    """One optimizer step at 0-based `step`; returns the batch loss at the current parameters (device scalar).

    plain / ejr: gradient at theta (SAM: then replaced by the gradient at theta + rho g/||g||).
    ejr_sam / ejr_v2 (App. N Eq. 38-39): g = <J>_B u at theta, then the gradient of L_B (+ mu_reg u^T <z>_B)
    at theta + rho_reg g/||g||, applied at theta.
    """
    x, y, targets = make_batch(data, step, spec)
    u = None
    if spec.ejr is not None:
        u = ejr.logit_direction(spec.objective.num_classes, spec.seed, step, spec.generator, x.dtype)
    optimizer.zero_grad(set_to_none=True)
    if spec.ejr in ("ejr_sam", "ejr_v2"):
        g, loss = ejr.logit_direction_gradient(model, spec.objective, x, y, targets, u, spec.grad_chunk)
        params = ejr.trainable_parameters(model)
        weight = spec.mu_reg * u if spec.ejr == "ejr_v2" else None
        perturbed_gradient(
            model,
            params,
            sam_perturbation(params, g, spec.rho_reg),
            lambda: accumulate_gradients(model, spec.objective, x, y, targets, spec.grad_chunk, weight),
        )
    else:
        loss = batch_gradient(model, spec, x, y, targets, u)
        if spec.sam_rho is not None:
            params = [p for p in model.parameters() if p.grad is not None]
            e = sam_perturbation(params, [p.grad for p in params], spec.sam_rho, spec.sam_adaptive)
            perturbed_gradient(model, params, e, lambda: batch_gradient(model, spec, x, y, targets, u))
    optimizer.step()
    return loss


def step_passes(spec: StepSpec) -> dict:
    """The passes over the batch that `train_step` makes per step with this spec (recorded in status.json)."""
    n = spec.sampler.batch_size
    chunked = spec.grad_chunk is not None and spec.grad_chunk < n
    passes = ejr.step_passes(spec.ejr, chunked, spec.sam_rho is not None)
    if chunked:
        passes["chunks"] = math.ceil(n / spec.grad_chunk)
    return passes


def perturbed_gradient(model: nn.Module, params, e, gradient: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Replace `.grad` by the gradient that `gradient()` accumulates at theta + e, then restore theta; returns
    its value there. SAM's second pass (Foret et al. 2021, Alg. 1) and EJR's (App. N Eq. 38-39): same batch
    (same augmentation and mixup draw), BatchNorm statistics left as the first pass updated them."""
    with torch.no_grad():
        torch._foreach_add_(params, e)
    for p in model.parameters():
        p.grad = None
    try:
        with frozen_batchnorm_statistics(model):
            value = gradient()
    finally:
        with torch.no_grad():
            torch._foreach_sub_(params, e)
    return value
