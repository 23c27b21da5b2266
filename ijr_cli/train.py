"""One training step (plain or SAM), the fit loop, and `RunState`: exactly what a checkpoint stores.

The loop never reads a device value back per step: batch losses accumulate on the device and are read every
`sync_every` steps (non-finite check) and at evaluations. Every random draw of a step comes from a generator
re-seeded with (seed, stream, step), so a resumed run repeats an uninterrupted one exactly, and measurements
(which never touch these generators) cannot change training.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from torch import nn

from ijr_cli import ejr
from ijr_cli.data import BatchSampler, Dataset, chunks, random_crop_flip, stream_seed
from ijr_cli.models import frozen_batchnorm_statistics
from ijr_cli.objectives import Objective, mixup, mixup_lambda
from ijr_cli.optim import sam_perturbation


@dataclass
class StepSpec:
    """Everything a training step needs besides model and optimizer, as plain values."""

    objective: Objective
    sampler: BatchSampler
    seed: int
    augment: bool = False
    mixup_alpha: float = 0.0
    grad_chunk: Optional[int] = None  # most examples per forward/backward (gradients accumulate)
    sam_rho: Optional[float] = None  # None: a plain step
    sam_adaptive: bool = False
    ejr: Optional[str] = None  # None | "ejr" | "ejr_sam" | "ejr_v2" (paper 000 App. N; see `ijr_cli.ejr`)
    lambda_reg: float = 0.0  # ejr: penalty weight
    rho_reg: float = 0.0  # ejr_sam / ejr_v2: perturbation radius along <J>u
    mu_reg: float = 0.0  # ejr_v2: weight of u^T <z> at the perturbed point
    generator: Optional[torch.Generator] = None  # re-seeded per step and stream; on the data's device

    def __post_init__(self):
        if self.generator is None:
            self.generator = torch.Generator(device=self.sampler.device)


@dataclass
class RunState:
    """The mutable state of a run; `checkpoint_dict` / `load_checkpoint_dict` round-trip it exactly."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0  # optimizer steps taken
    loss_sum: Optional[torch.Tensor] = None  # sum of batch losses since the last logged row (on the device)
    loss_count: int = 0
    last_logged_step: int = -1
    best_test_acc: Optional[float] = None
    extra: Dict[str, float] = field(default_factory=dict)
    measure_state: Dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. Lanczos warm starts

    def checkpoint_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "loss_sum": self.loss_sum, "loss_count": self.loss_count,
                "last_logged_step": self.last_logged_step, "best_test_acc": self.best_test_acc,
                "extra": dict(self.extra), "measure_state": dict(self.measure_state), "rng": rng}

    def load_checkpoint_dict(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.step, self.loss_count = int(ckpt["step"]), int(ckpt["loss_count"])
        self.loss_sum = ckpt["loss_sum"]
        self.last_logged_step = int(ckpt["last_logged_step"])
        self.best_test_acc = ckpt["best_test_acc"]
        self.extra = dict(ckpt.get("extra", {}))
        self.measure_state.clear()
        self.measure_state.update(ckpt.get("measure_state", {}))
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if "cuda" in ckpt["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])


def save_checkpoint(path: Path, ckpt: dict) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over the old checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    return torch.load(path, map_location=device, weights_only=True)


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


def accumulate_gradients(model: nn.Module, objective: Objective, x: torch.Tensor, y: torch.Tensor,
                         targets: Optional[torch.Tensor], grad_chunk: Optional[int],
                         logit_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
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


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: Dataset, step: int,
               spec: StepSpec) -> torch.Tensor:
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
        perturbed_gradient(model, params, sam_perturbation(params, g, spec.rho_reg),
                           lambda: accumulate_gradients(model, spec.objective, x, y, targets, spec.grad_chunk,
                                                        weight))
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


@dataclass
class FitResult:
    status: str  # COMPLETED, DIVERGED or STOPPED
    stop_reason: str  # max_steps | train_acc_goal | non_finite_loss | what `stop_requested` returned
    diverged_at_step: Optional[int] = None


def _progress_bar(enabled: Optional[bool], total: int, initial: int):
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else (not enabled)
    return tqdm(total=total, initial=initial, disable=disable, unit="step", dynamic_ncols=True, leave=True)


def fit(state: RunState, *, total_steps: int, step_fn: Callable[[int], torch.Tensor],
        evaluate: Callable[[int], Dict[str, float]], log: Callable[[dict], None],
        checkpoint: Callable[[], None], lr_at: Callable[[int], float], row_due: Callable[[int], bool],
        checkpoint_every: int, sync_every: int, train_acc_goal: Optional[float] = None,
        progress: Optional[bool] = None, stop_requested: Callable[[], Optional[str]] = lambda: None) -> FitResult:
    """Train from `state.step` to `total_steps`, logging a row at step 0, at every step where `row_due(step)`
    and at the end; checkpoint every `checkpoint_every` steps; stop early on a non-finite loss (DIVERGED) or
    when the full-train-set accuracy reaches `train_acc_goal`; between steps, when `stop_requested()` returns a
    reason (a signal arrived), checkpoint and return STOPPED with that reason.

    `step_fn(s)` performs 0-based step s and returns its batch loss; `lr_at(s)` is the lr step s uses;
    `evaluate(step)` returns the metrics of a row (whatever is due then), `log(row)` stores it.
    """

    def log_row() -> Dict[str, float]:
        step = state.step
        row: Dict[str, float] = {"step": step, "lr": lr_at(max(step - 1, 0))}
        if state.loss_count:
            row["batch_loss"] = float(state.loss_sum) / state.loss_count
        row.update(evaluate(step))
        state.loss_sum, state.loss_count, state.last_logged_step = None, 0, step
        acc = row.get("test_acc")
        if acc is not None and math.isfinite(acc) and (state.best_test_acc is None or acc > state.best_test_acc):
            state.best_test_acc = acc
        log(row)
        return row

    def diverged(row: Optional[dict]) -> bool:
        if state.loss_sum is not None and not bool(torch.isfinite(state.loss_sum)):
            return True
        return row is not None and not math.isfinite(row.get("train_loss", 0.0))

    if state.step == 0 and state.last_logged_step < 0:  # the row of the initial parameters
        row = log_row()
        if diverged(row):
            return FitResult("DIVERGED", "non_finite_loss", state.step)
        if train_acc_goal is not None and row.get("train_acc", 0.0) >= train_acc_goal:
            return FitResult("COMPLETED", "train_acc_goal")
    bar = _progress_bar(progress, total_steps, state.step)
    try:
        while state.step < total_steps:
            s = state.step
            lr = lr_at(s)
            for group in state.optimizer.param_groups:
                group["lr"] = lr
            loss = step_fn(s)
            if state.loss_sum is None:
                state.loss_sum = loss.clone()
            else:
                state.loss_sum.add_(loss)
            state.loss_count += 1
            state.step = s + 1
            bar.update(1)
            due_eval = state.step == total_steps or row_due(state.step)
            if due_eval or state.step % sync_every == 0:  # the only host syncs of the loop
                if diverged(None):
                    log_row()
                    return FitResult("DIVERGED", "non_finite_loss", state.step)
                if not due_eval:
                    bar.set_postfix(loss=f"{float(state.loss_sum) / state.loss_count:.4g}", refresh=False)
            if due_eval:
                row = log_row()
                if "train_loss" in row and "train_acc" in row:
                    bar.set_postfix(loss=f"{row['train_loss']:.4g}", acc=f"{row['train_acc']:.3f}", refresh=False)
                if diverged(row):
                    return FitResult("DIVERGED", "non_finite_loss", state.step)
                if train_acc_goal is not None and row.get("train_acc", 0.0) >= train_acc_goal:
                    checkpoint()
                    return FitResult("COMPLETED", "train_acc_goal")
            if state.step % checkpoint_every == 0:
                checkpoint()
            reason = stop_requested()
            if reason is not None and state.step < total_steps:
                checkpoint()
                return FitResult("STOPPED", reason)
    finally:
        bar.close()
    checkpoint()
    return FitResult("COMPLETED", "max_steps")
