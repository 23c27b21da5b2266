"""The fit loop of a pack: `train.loop.fit` for K members stepped together, each member ending on its own.

Every member logs the rows its sequential run logs, at the same steps, and ends as it would: DIVERGED at the first
sync point or row with a non-finite loss (its last row logged, then frozen: masked out of updates and
measurements while the others go on), COMPLETED at a train-accuracy goal (checkpointed, frozen) or at the last step,
STOPPED with a checkpoint when a stop signal arrives. Batch losses accumulate on the device as one (K,) tensor and
are read every `sync_every` steps and at rows, one host sync for all members.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ijr_cli.core import metric_names as M
from ijr_cli.train.loop import FitResult
from ijr_cli.train.progress import Progress
from ijr_cli.train.state import RunState


def fit_pack(
    states: List[RunState],
    *,
    total_steps: int,
    step_fn: Callable[[int, torch.Tensor], torch.Tensor],
    evaluate: Callable[[int, List[int]], Dict[int, Dict[str, float]]],
    log: Callable[[int, dict], None],
    checkpoint: Callable[[List[int]], None],
    lr_at: Callable[[int, int], float],
    row_due: Callable[[int], bool],
    checkpoint_every: int,
    sync_every: int,
    train_acc_goal: Sequence[Optional[float]],
    progress: Optional[bool] = None,
    log_paths: Sequence[Optional[object]] = (),
    stop_requested: Callable[[], Optional[str]] = lambda: None,
) -> Dict[int, FitResult]:
    """Train every member from the common `states[i].step` to `total_steps`; returns each member's FitResult.

    `step_fn(s, active)` performs 0-based step s for the members where `active` (K,) is 1 (0: frozen) and returns the
    batch losses (K,); `evaluate(step, members)` returns those members' rows (whatever is due then); `log(i, row)`
    stores member i's row; `checkpoint(members)` saves theirs; `lr_at(i, s)` is member i's lr at step s.
    `progress`: a bar (or one line per row) for the pack, showing its first training member; each member's rows
    also go to its own log file (`log_paths[i]`)."""
    k = len(states)
    p0 = next(iter(states[0].model.parameters()))
    step = states[0].step
    if any(s.step != step for s in states):
        raise ValueError("the members of a pack resume from one step")
    zero = torch.zeros((), device=p0.device, dtype=p0.dtype)
    loss_sum = torch.stack([zero if s.loss_sum is None else s.loss_sum.reshape(()).to(zero) for s in states])
    active = list(range(k))
    results: Dict[int, FitResult] = {}
    bar = Progress(total_steps, step, progress, None)
    member_logs = [Progress(total_steps, step, False, p) for p in (log_paths or [None] * k)]

    def log_rows(members: List[int]) -> Dict[int, dict]:
        rows = evaluate(step, members)
        read = loss_sum.tolist()
        out = {}
        for i in members:
            state = states[i]
            row: Dict[str, float] = {M.STEP: step, M.LR: lr_at(i, max(step - 1, 0))}
            if state.loss_count:
                row[M.BATCH_LOSS] = read[i] / state.loss_count
            row.update(rows[i])
            loss_sum[i] = 0.0
            state.loss_sum, state.loss_count, state.last_logged_step = None, 0, step
            acc = row.get(M.TEST_ACC)
            if acc is not None and math.isfinite(acc) and (state.best_test_acc is None or acc > state.best_test_acc):
                state.best_test_acc = acc
            log(i, row)
            member_logs[i].row(row)
            out[i] = row
        if members:
            bar.label = f"{len(active)} of {k} members training, member {members[0]}" if k > 1 else None
            bar.row(out[members[0]])
        return out

    def end(i: int, result: FitResult) -> None:
        results[i] = result
        active.remove(i)

    def check_rows(rows: Dict[int, dict], save_goal: bool) -> None:
        for i, row in rows.items():
            if not math.isfinite(row.get(M.TRAIN_LOSS, 0.0)):
                end(i, FitResult("DIVERGED", "non_finite_loss", step))
            elif train_acc_goal[i] is not None and row.get(M.TRAIN_ACC, 0.0) >= train_acc_goal[i]:
                if save_goal:
                    save([i])
                end(i, FitResult("COMPLETED", "train_acc_goal"))

    def keep_loss_sums() -> None:  # (the accumulated losses travel in each member's checkpoint)
        for i in active:
            states[i].loss_sum = loss_sum[i].clone() if states[i].loss_count else None

    def save(members: List[int]) -> None:
        keep_loss_sums()
        checkpoint(members)

    try:
        if step == 0 and all(s.last_logged_step < 0 for s in states):  # the rows of the initial parameters
            check_rows(log_rows(list(active)), save_goal=False)
        mask, masked = None, None
        while active and step < total_steps:
            if masked != active:  # (rebuilt only when a member ends: no host-to-device copy per step)
                masked = list(active)
                mask = torch.tensor([float(i in active) for i in range(k)], device=p0.device, dtype=p0.dtype)
            losses = step_fn(step, mask)
            loss_sum.add_(losses)  # (an ended member's sum is never read again)
            for i in active:
                states[i].loss_count += 1
                states[i].step = step + 1
            step += 1
            bar.update(1)
            due_eval = step == total_steps or row_due(step)
            if due_eval or step % sync_every == 0:  # the only host syncs of the loop
                finite = torch.isfinite(loss_sum).tolist()
                diverged = [i for i in active if not finite[i]]
                if diverged:
                    log_rows(diverged)
                    for i in diverged:
                        end(i, FitResult("DIVERGED", "non_finite_loss", step))
                if not due_eval and bar.use_bar and active:
                    bar.batch_loss(float(loss_sum[active[0]]) / states[active[0]].loss_count)
            if due_eval and active:
                check_rows(log_rows(list(active)), save_goal=True)
            if step % checkpoint_every == 0 and active:
                save(list(active))
            reason = stop_requested()
            if reason is not None and step < total_steps and active:
                save(list(active))
                for i in list(active):
                    end(i, FitResult("STOPPED", reason))
    finally:
        bar.close()
    if active:
        save(list(active))
        for i in list(active):
            end(i, FitResult("COMPLETED", "max_steps"))
    return results
