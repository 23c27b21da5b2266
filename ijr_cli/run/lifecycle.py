"""A run's life in its directory: open it, begin an attempt, resume from the checkpoint, record a failure or a
stop, finish. Each step is one function; `experiment.run` calls them in order.

Everything that can refuse the command (an unreadable status, another config, a live owner, an unreadable
checkpoint) happens before `begin_attempt`, the first function that writes.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import yaml

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.arrays import ArrayLog
from ijr_cli.core.errors import RunDirectoryInUse, StorageError, Terminated, UserError
from ijr_cli.core.status import FINISHED, Attempt, Status, read_status, write_status
from ijr_cli.train.loop import FitResult
from ijr_cli.train.state import RunState, load_checkpoint

EXTENDABLE = ("trainer.max_steps", "trainer.epochs")  # a COMPLETED run may be continued to a longer length


def open_run_directory(run_dir: Path, config_yaml: str) -> Tuple[records.RunDirectory, Optional[Status], bool]:
    """The directory, the Status of the run it holds (None: a new run) and whether this command extends it (a
    COMPLETED run asked for more steps: `check_extension` decides once the run is built); a UserError when this
    command may not use it: an unreadable status.json, a run with another config, or a RUNNING run whose process
    is alive here."""
    rd = records.RunDirectory(run_dir)
    status = read_status(rd.status_path)
    if rd.status_path.exists() and status is None:
        raise UserError(f"{rd.status_path} is unreadable; move the run directory away or choose another hydra.run.dir")
    diff = records.config_differences(rd.config_path.read_text(), config_yaml) if rd.config_path.exists() else []
    extending = bool(diff) and set(diff) <= set(EXTENDABLE) and status is not None and status.status == "COMPLETED"
    if diff and not extending:
        conflict = records.config_conflict(rd.config_path, config_yaml)
        only_length = set(diff) <= set(EXTENDABLE)
        raise UserError(
            f"run directory {rd.path} holds a run with a different config ({conflict}); "
            f"use the same overrides to resume, or another hydra.run.dir"
            + (" (only a COMPLETED run can be extended to a larger trainer.max_steps)" if only_length else "")
        )
    last = status.last_attempt if status else None
    if (
        status
        and status.status == "RUNNING"
        and last
        and last.pid not in (None, os.getpid())
        and last.alive_on_this_host()
    ):
        raise RunDirectoryInUse(
            f"run directory {rd.path} is in use by process {last.pid} on this host; wait for it or stop it"
        )
    return rd, status, extending


def check_extension(rd: records.RunDirectory, stored: Status, total_steps: int, schedule_name: str, due) -> None:
    """A COMPLETED run continued to `total_steps` must end exactly as a run of that length from the start would:
    it stopped at its max_steps (not at a train-accuracy goal), the new length is longer, the learning rate does not
    depend on the length (a constant schedule), and every metric group is due at the old last step in the longer
    run too (its row, measured in full as a last row, is then the longer run's row). Otherwise a UserError."""
    old = stored.facts.get("total_steps")
    where = f"run directory {rd.path}"
    if stored.stop_reason != "max_steps" or not isinstance(old, int):
        raise UserError(f"{where} stopped by {stored.stop_reason}, not at its max_steps: it cannot be extended")
    if total_steps <= old:
        raise UserError(f"{where} already ran {old} steps; extending it needs more (the new length is {total_steps})")
    if schedule_name != "constant":
        raise UserError(
            f"{where}: schedule={schedule_name} depends on the run's length, so a longer run is not a continuation "
            f"of this one; train it anew in another hydra.run.dir"
        )
    all_groups, due_then = set(due.every), set(due.due(old))
    if due_then != all_groups:
        missing = ", ".join(sorted(all_groups - due_then))
        raise UserError(
            f"{where}: its last step {old} is not a measurement step of the longer run for {missing} (their "
            f"cadence does not divide {old}); extend from a run whose length every cadence divides"
        )


def is_finished(status: Optional[Status]) -> bool:
    """COMPLETED and DIVERGED runs are results: they are not run again."""
    return status is not None and status.status in FINISHED


def read_checkpoint(rd: records.RunDirectory, stored: Optional[Status], device: torch.device) -> Optional[dict]:
    """The checkpoint to resume from (None for a new run, or a run stopped before its first checkpoint); a
    UserError when it cannot be loaded. Read before anything is written."""
    if stored is None or not rd.checkpoint_path.exists():
        return None
    try:
        return load_checkpoint(rd.checkpoint_path, device)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same user-facing problem
        raise UserError(
            f"{rd.checkpoint_path} cannot be loaded ({type(e).__name__}); delete it to restart the run from step 0"
        ) from None


def begin_attempt(
    rd: records.RunDirectory,
    stored: Optional[Status],
    config_yaml: str,
    overrides: List[str],
    facts: Dict[str, object],
    extending: bool = False,
) -> Tuple[Status, Attempt]:
    """The first writes: the directory, config.yaml and overrides.yaml (once; again when a COMPLETED run is
    extended to a longer length, which then becomes the run's). Returns the Status, RUNNING with a new attempt by
    this process and the run's facts (host, device, versions, ...), for the caller to write once `resume` has said
    where the attempt starts."""
    with records.storage_errors(rd.path):
        rd.path.mkdir(parents=True, exist_ok=True)
    if extending:
        previous = read_status(rd.status_path)
        facts = {**facts, "extended_from_steps": previous.facts.get("total_steps") if previous else None}
    if not rd.config_path.exists() or extending:
        records.write_atomic(rd.config_path, config_yaml)
        records.write_atomic(rd.overrides_path, yaml.safe_dump(list(overrides)))
    _hold_reserve(rd)
    status = stored or Status(status="RUNNING")
    status.status, status.error, status.traceback = "RUNNING", None, None
    status.stop_reason = status.finished = None
    status.facts.update({"command": sys.argv, "cwd": os.getcwd(), **facts})
    attempt = Attempt.begin()
    status.facts["host"] = attempt.host
    status.attempts.append(attempt)
    return status, attempt


RESERVE_NAME = ".reserve"
RESERVE_BYTES = 256 * 1024  # room for status.json (a few KiB) when the disk fills up mid-run


def _hold_reserve(rd: records.RunDirectory) -> None:
    """Claim a little disk space for the run's last word: if the disk fills up mid-run, the reserve is deleted and
    status.json can still say FAILED (disk full) instead of staying RUNNING."""
    path = rd.path / RESERVE_NAME
    with records.storage_errors(path):
        with open(path, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
            f.flush()
            os.fsync(f.fileno())


def release_reserve(rd: records.RunDirectory) -> None:
    """Give the reserved space back (at the end of every attempt, or to write the status of a full disk)."""
    try:
        (rd.path / RESERVE_NAME).unlink()
    except OSError:
        pass


def resume(
    state: RunState, checkpoint: Optional[dict], log: records.MetricsLog, arrays: ArrayLog, attempt: Attempt
) -> None:
    """Continue from the checkpoint (model, optimizer, step, accumulators, RNG states, warm starts) and drop the
    metrics rows and array records logged after it (they are computed again, identically); without one, start both
    logs afresh."""
    if checkpoint is None:
        log.truncate_after(-1)
        arrays.truncate_after(-1)
        return
    state.load_checkpoint_dict(checkpoint)
    attempt.resumed_from_step = state.step
    log.truncate_after(state.last_logged_step)
    arrays.truncate_after(state.last_logged_step)


def record_failure(
    rd: records.RunDirectory, status: Status, attempt: Attempt, error: BaseException, train_s: float
) -> None:
    """FAILED with the reason: the signal or Ctrl-C that interrupted it, or the error and its traceback."""
    attempt.end(train_s)
    interrupted = isinstance(error, (KeyboardInterrupt, Terminated))
    status.status = "FAILED"
    if interrupted:
        status.error = str(error) if isinstance(error, Terminated) else "interrupted (KeyboardInterrupt)"
    else:
        status.error = "".join(traceback.format_exception_only(type(error), error)).strip()
        status.traceback = traceback.format_exc()
    write_status(rd.status_path, status)


def record_storage_failure(
    rd: records.RunDirectory, status: Status, attempt: Attempt, error: StorageError, train_s: float
) -> None:
    """FAILED with the reason ("disk full: cannot write PATH (ENOSPC: ...)"), written into the space of the reserve;
    when even that cannot be written (a read-only filesystem) the message on stderr says so."""
    release_reserve(rd)
    attempt.end(train_s)
    status.status, status.error, status.traceback = "FAILED", str(error), None
    try:
        write_status(rd.status_path, status)
    except StorageError:
        try:  # a directory that refuses new files may still let status.json itself be rewritten
            records.overwrite_in_place(rd.status_path, json.dumps(records.json_safe(status.as_dict()), indent=2) + "\n")
        except StorageError as again:
            error.args = (f"{error}; the run's status could not be recorded either ({again.reason})",)


def record_stop(
    rd: records.RunDirectory, status: Status, attempt: Attempt, result: FitResult, step: int, train_s: float
) -> str:
    """STOPPED by a signal at a step boundary, with a checkpoint of that step; returns the message."""
    attempt.end(train_s)
    attempt.stopped_at_step = step
    status.status, status.stop_reason = "STOPPED", result.stop_reason
    status.error = f"stopped by {result.stop_reason} at step {step} (checkpoint saved)"
    write_status(rd.status_path, status)
    return f"stopped by {result.stop_reason} at step {step}; checkpoint saved"


def finish(
    rd: records.RunDirectory,
    status: Status,
    attempt: Attempt,
    result: FitResult,
    state: RunState,
    last_row: Dict[str, object],
    steps_per_epoch: int,
    train_s: float,
) -> dict:
    """summary.json (the last logged row, the outcome, the wall time summed over attempts) and status.json
    COMPLETED or DIVERGED; returns the summary."""
    attempt.end(train_s)
    if not last_row:  # resumed exactly at a finished point: the last row is on disk
        rows = records.read_rows(rd.metrics_path)
        last_row = rows[-1] if rows else {}
    summary = {k: v for k, v in last_row.items() if k != M.ELAPSED_S}
    summary.update(
        {
            "status": result.status,
            "stop_reason": result.stop_reason,
            "steps": state.step,
            "epochs": state.step / steps_per_epoch,
            "best_test_acc": state.best_test_acc,
            "diverged_at_step": result.diverged_at_step,
            "num_params": status.facts.get("num_params"),
            "wall_time_s": status.wall_time_s,
        }
    )
    rd.write_summary(summary)
    status.status, status.stop_reason, status.finished = result.status, result.stop_reason, records.now_iso()
    write_status(rd.status_path, status)
    return summary


def finish_loggers(rd: records.RunDirectory, status: Status, loggers, summary: dict) -> None:
    """The live loggers' end of the attempt (after summary.json and status.json, which MLflow takes as artifacts);
    status.json again when one of them failed there (it records why the logger was turned off)."""
    if not loggers:
        return
    before = len(loggers.disabled)
    loggers.finish(status.status, summary)
    if len(loggers.disabled) != before:
        write_status(rd.status_path, status)
