"""The fit loop: steps from `state.step` to the end, rows when due, checkpoints, divergence and stop requests.

The loop never reads a device value back per step: batch losses accumulate on the device and are read every
`sync_every` steps (non-finite check) and at evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

from ijr_cli.core import metric_names as M
from ijr_cli.train.progress import Progress
from ijr_cli.train.state import RunState


@dataclass
class FitResult:
    status: str  # COMPLETED, DIVERGED or STOPPED
    stop_reason: str  # max_steps | train_acc_goal | non_finite_loss | what `stop_requested` returned
    diverged_at_step: Optional[int] = None


def fit(
    state: RunState,
    *,
    total_steps: int,
    step_fn: Callable[[int], torch.Tensor],
    evaluate: Callable[[int], Dict[str, float]],
    log: Callable[[dict], None],
    checkpoint: Callable[[], None],
    lr_at: Callable[[int], float],
    row_due: Callable[[int], bool],
    checkpoint_every: int,
    sync_every: int,
    train_acc_goal: Optional[float] = None,
    progress: Optional[bool] = None,
    log_path: Optional[Path] = None,
    stop_requested: Callable[[], Optional[str]] = lambda: None,
) -> FitResult:
    """Train from `state.step` to `total_steps`, logging a row at step 0, at every step where `row_due(step)`
    and at the end; checkpoint every `checkpoint_every` steps; stop early on a non-finite loss (DIVERGED) or
    when the full-train-set accuracy reaches `train_acc_goal`; between steps, when `stop_requested()` returns a
    reason (a signal arrived), checkpoint and return STOPPED with that reason.

    `step_fn(s)` performs 0-based step s and returns its batch loss; `lr_at(s)` is the lr step s uses;
    `evaluate(step)` returns the metrics of a row (whatever is due then), `log(row)` stores it. `progress` and
    `log_path`: see `train.progress.Progress` (a bar on a terminal, one line per row elsewhere and in the log).
    """

    def log_row() -> Dict[str, float]:
        step = state.step
        row: Dict[str, float] = {M.STEP: step, M.LR: lr_at(max(step - 1, 0))}
        if state.loss_count:
            row[M.BATCH_LOSS] = float(state.loss_sum) / state.loss_count
        row.update(evaluate(step))
        state.loss_sum, state.loss_count, state.last_logged_step = None, 0, step
        acc = row.get(M.TEST_ACC)
        if acc is not None and math.isfinite(acc) and (state.best_test_acc is None or acc > state.best_test_acc):
            state.best_test_acc = acc
        log(row)
        bar.row(row)
        return row

    def diverged(row: Optional[dict]) -> bool:
        if state.loss_sum is not None and not bool(torch.isfinite(state.loss_sum)):
            return True
        return row is not None and not math.isfinite(row.get(M.TRAIN_LOSS, 0.0))

    bar = Progress(total_steps, state.step, progress, log_path)
    try:
        if state.step == 0 and state.last_logged_step < 0:  # the row of the initial parameters
            row = log_row()
            if diverged(row):
                return FitResult("DIVERGED", "non_finite_loss", state.step)
            if train_acc_goal is not None and row.get(M.TRAIN_ACC, 0.0) >= train_acc_goal:
                return FitResult("COMPLETED", "train_acc_goal")
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
                if not due_eval and bar.use_bar:
                    bar.batch_loss(float(state.loss_sum) / state.loss_count)
            if due_eval:
                row = log_row()
                if diverged(row):
                    return FitResult("DIVERGED", "non_finite_loss", state.step)
                if train_acc_goal is not None and row.get(M.TRAIN_ACC, 0.0) >= train_acc_goal:
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
