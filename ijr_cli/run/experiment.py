"""One training run from a typed config: validate, open the run directory, build, resume, fit, finish.

The order is the "nothing half-written" rule: every check that can fail on bad input (values, the run directory,
data files, sizes, model/data compatibility) runs before the first byte is written (`lifecycle.begin_attempt`).
The steps of a run's life in its directory are the functions of `ijr_cli.run.lifecycle`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.arrays import ArrayLog, split_arrays
from ijr_cli.core.config import TrainConfig, validate
from ijr_cli.core.errors import StorageError
from ijr_cli.core.status import write_status
from ijr_cli.measure.evaluate import evaluate
from ijr_cli.models import count_parameters
from ijr_cli.optim import lr_factor
from ijr_cli.run import lifecycle
from ijr_cli.run.build import Built, build
from ijr_cli.run.lock import RunLock
from ijr_cli.run.signals import StopSignals
from ijr_cli.run.summary import environment, summary_table
from ijr_cli.track.base import Loggers, RunInfo, check_installed, selected
from ijr_cli.track.live import loggers_for_run
from ijr_cli.train.loop import fit
from ijr_cli.train.state import save_checkpoint
from ijr_cli.train.step import step_passes, train_step

LOG_NAME = "ijr-train.log"  # (the name of Hydra's job log: `${hydra.job.name}.log`)


def run(cfg: TrainConfig, *, run_dir: Path, config_yaml: str, overrides: List[str]) -> int:
    """Train (or resume, or report a finished run); returns the process exit code (0 also for DIVERGED).

    The run directory's lock (`lock.RunLock`) is held from before its status is read until the run ends."""
    validate(cfg)
    check_installed(selected(cfg.logger))
    with RunLock(run_dir):
        return _run(cfg, run_dir, config_yaml, overrides)


def _run(cfg: TrainConfig, run_dir: Path, config_yaml: str, overrides: List[str]) -> int:
    rd, stored, extending = lifecycle.open_run_directory(run_dir, config_yaml)
    if lifecycle.is_finished(stored) and not extending:
        print(f"ijr-train: {rd.path} already {stored.status}; not run again (use another hydra.run.dir to train anew)")
        summary = rd.read_summary()
        if summary:
            print(summary_table(summary, rd.path, stored))
        return 0
    b = build(cfg)
    if extending:
        lifecycle.check_extension(rd, stored, b.total_steps, cfg.schedule.name.value, b.schedule)
    checkpoint = lifecycle.read_checkpoint(rd, stored, b.device)
    # ---- from here on, files are written
    status, attempt = lifecycle.begin_attempt(rd, stored, config_yaml, overrides, run_facts(cfg, b), extending)
    log = records.MetricsLog(rd.metrics_path)
    array_log = ArrayLog(rd.path)
    earlier_s = status.wall_time_s  # (this attempt has not ended: it adds nothing yet)
    t0 = time.perf_counter()
    last_row: Dict[str, object] = {}
    stops = StopSignals()
    loggers = loggers_for_run(cfg.logger, RunInfo.of(rd.path, config_yaml, overrides, status.facts.get("git")))
    try:
        lifecycle.resume(b.state, checkpoint, log, array_log, attempt)
        loggers.start(status, b.state.last_logged_step + 1, rd.metrics_path)
        write_status(rd.status_path, status)
        with log.open(), array_log.open(), stops:
            result = _fit(cfg, b, log, array_log, last_row, rd, stops, started=t0, earlier_s=earlier_s, loggers=loggers)
        if result.status == "STOPPED":
            message = lifecycle.record_stop(rd, status, attempt, result, b.state.step, time.perf_counter() - t0)
            summary = {}
        else:
            summary = lifecycle.finish(
                rd, status, attempt, result, b.state, last_row, b.spec.sampler.steps_per_epoch, time.perf_counter() - t0
            )
        lifecycle.finish_loggers(rd, status, loggers, summary)
    except StorageError as e:
        lifecycle.record_storage_failure(rd, status, attempt, e, time.perf_counter() - t0)
        loggers.finish("FAILED", {})
        raise
    except BaseException as e:
        lifecycle.record_failure(rd, status, attempt, e, time.perf_counter() - t0)
        loggers.finish("FAILED", {})
        raise
    finally:
        loggers.close()
        lifecycle.release_reserve(rd)
    if result.status == "STOPPED":
        stops.pass_on(message)
    print(summary_table(records.json_safe(summary), rd.path, status))
    return 0


def run_facts(cfg: TrainConfig, b: Built) -> Dict[str, object]:
    """What status.json records about the run: its size, length, the passes of its step and the environment."""
    return {
        "num_params": count_parameters(b.state.model),
        "total_steps": b.total_steps,
        "steps_per_epoch": b.spec.sampler.steps_per_epoch,
        "step_passes": step_passes(b.spec),
        **environment(b.device, cfg.trainer.dtype.value),
    }


def lr_schedule(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """step -> the learning rate that 0-based step uses (optimizer.lr times the schedule's factor)."""
    o, s = cfg.optimizer, cfg.schedule

    def lr_at(step: int) -> float:
        return o.lr * lr_factor(
            step,
            total_steps,
            s.name.value,
            gamma=s.gamma,
            milestones=list(s.milestones),
            warmup_steps=s.warmup_steps,
            min_lr_factor=s.min_lr_factor,
        )

    return lr_at


def row_writer(
    log: records.MetricsLog, array_log: ArrayLog, last_row: Dict[str, object], loggers: Optional[Loggers] = None
) -> Callable[[dict], None]:
    """row -> stored: array-valued metrics to arrays.bin, the rest to metrics.jsonl (and kept as the last row),
    then to the live loggers."""

    def log_row(row: dict) -> None:
        scalars, arrays = split_arrays(row)
        array_log.write_row(row[M.STEP], arrays)
        last_row.clear()
        last_row.update(scalars)
        log.write(scalars)
        if loggers:
            loggers.log(scalars)

    return log_row


def _fit(
    cfg: TrainConfig,
    b: Built,
    log: records.MetricsLog,
    array_log: ArrayLog,
    last_row: Dict[str, object],
    rd: records.RunDirectory,
    stops: StopSignals,
    *,
    started: float,
    earlier_s: float,
    loggers: Optional[Loggers] = None,
):
    """The fit loop wired to this run: its step, its rows (evaluation and the due measurements), its log, its
    checkpoints, its learning-rate schedule and its stop signals."""
    state = b.state
    lr_at = lr_schedule(cfg, b.total_steps)

    def evaluate_row(step: int) -> Dict[str, float]:
        groups = b.schedule.due(step)
        row: Dict[str, float] = {}
        if "eval" in groups:
            row.update(evaluate(state.model, b.data, b.objective, cfg.trainer.eval_batch_size))
        row.update(b.measurer.measure(groups, lr=lr_at(max(step - 1, 0)), step=step))
        row[M.ELAPSED_S] = earlier_s + time.perf_counter() - started
        return row

    return fit(
        state,
        total_steps=b.total_steps,
        step_fn=lambda step: train_step(state.model, state.optimizer, b.data, step, b.spec),
        evaluate=evaluate_row,
        log=row_writer(log, array_log, last_row, loggers),
        checkpoint=lambda: save_checkpoint(rd.checkpoint_path, state.checkpoint_dict()),
        lr_at=lr_at,
        row_due=b.schedule.any_due,
        checkpoint_every=cfg.trainer.checkpoint_every,
        sync_every=cfg.trainer.sync_every,
        train_acc_goal=cfg.trainer.train_acc_goal,
        progress=cfg.trainer.progress,
        log_path=rd.path / LOG_NAME,
        stop_requested=stops.requested,
    )
