"""One training run from a typed config: checks, resume, status bookkeeping, summary.

Order matters for "nothing half-written": every check that can fail on bad input (values, run directory state,
data files, sizes, model/data compatibility, metric names) runs before the first byte is written.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List

import yaml

from ijr_cli.core import records
from ijr_cli.core.config import TrainConfig, validate
from ijr_cli.core.errors import Terminated, UserError
from ijr_cli.measure.evaluate import evaluate
from ijr_cli.models import count_parameters
from ijr_cli.optim import lr_factor
from ijr_cli.run.build import build
from ijr_cli.run.directory import check_run_directory
from ijr_cli.run.signals import StopSignals
from ijr_cli.run.summary import environment, summary_table
from ijr_cli.train.loop import fit
from ijr_cli.train.state import load_checkpoint, save_checkpoint
from ijr_cli.train.step import step_passes, train_step


def run(cfg: TrainConfig, *, run_dir: Path, config_yaml: str, overrides: List[str]) -> int:
    """Train (or resume, or report a finished run); returns the process exit code (0 also for DIVERGED)."""
    validate(cfg)
    rd = records.RunDirectory(run_dir)
    stored = check_run_directory(rd, config_yaml)
    if stored and stored.get("status") in records.FINISHED:
        summary = rd.read_summary()
        print(
            f"ijr-train: {rd.path} already {stored['status']}; not run again (use another hydra.run.dir to train anew)"
        )
        if summary:
            print(summary_table(summary, rd.path))
        return 0
    b = build(cfg)
    state = b.state
    resume_ckpt = None
    if stored is not None and rd.checkpoint_path.exists():
        try:
            resume_ckpt = load_checkpoint(rd.checkpoint_path, b.device)
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same user-facing problem
            raise UserError(
                f"{rd.checkpoint_path} cannot be loaded ({type(e).__name__}); delete it to restart the run from step 0"
            ) from None

    # ---- from here on, files are written
    rd.path.mkdir(parents=True, exist_ok=True)
    if not rd.config_path.exists():
        rd.config_path.write_text(config_yaml)
        rd.overrides_path.write_text(yaml.safe_dump(list(overrides)))
    status = stored or {"status": "RUNNING", "created": records.now_iso(), "attempts": []}
    status.update(
        {
            "status": "RUNNING",
            "error": None,
            "host": socket.gethostname(),
            "command": sys.argv,
            "cwd": os.getcwd(),
            "num_params": count_parameters(state.model),
            "total_steps": b.total_steps,
            "steps_per_epoch": b.spec.sampler.steps_per_epoch,
            "step_passes": step_passes(b.spec),
            **environment(b.device, cfg.trainer.dtype.value),
        }
    )
    attempt = {
        "started": records.now_iso(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start_ticks": records.process_start_ticks(os.getpid()),
        "slurm": records.slurm_ids(),
        "resumed_from_step": None,
    }
    log = records.MetricsLog(rd.metrics_path)
    if resume_ckpt is not None:
        state.load_checkpoint_dict(resume_ckpt)
        attempt["resumed_from_step"] = state.step
        log.truncate_after(state.last_logged_step)
    else:
        log.truncate_after(-1)
    status["attempts"].append(attempt)
    rd.write_status(status)
    earlier_s = sum(a.get("train_s", 0.0) for a in status["attempts"][:-1])
    t0 = time.perf_counter()
    log.open()
    last_row: Dict[str, float] = {}

    def evaluate_row(step: int) -> Dict[str, float]:
        groups = b.schedule.due(step)
        row: Dict[str, float] = {}
        if "eval" in groups:
            row.update(evaluate(state.model, b.data, b.objective, cfg.trainer.eval_batch_size))
        row.update(b.measurer.measure(groups, lr=lr_at(max(step - 1, 0))))
        row["elapsed_s"] = earlier_s + time.perf_counter() - t0
        return row

    def log_row(row: dict) -> None:
        last_row.clear()
        last_row.update(row)
        log.write(row)

    def checkpoint() -> None:
        save_checkpoint(rd.checkpoint_path, state.checkpoint_dict())

    o, s = cfg.optimizer, cfg.schedule

    def lr_at(step: int) -> float:
        return o.lr * lr_factor(
            step,
            b.total_steps,
            s.name.value,
            gamma=s.gamma,
            milestones=list(s.milestones),
            warmup_steps=s.warmup_steps,
            min_lr_factor=s.min_lr_factor,
        )

    stops = StopSignals()
    try:
        with stops:
            result = fit(
                state,
                total_steps=b.total_steps,
                step_fn=lambda step: train_step(state.model, state.optimizer, b.data, step, b.spec),
                evaluate=evaluate_row,
                log=log_row,
                checkpoint=checkpoint,
                lr_at=lr_at,
                row_due=b.schedule.any_due,
                checkpoint_every=cfg.trainer.checkpoint_every,
                sync_every=cfg.trainer.sync_every,
                train_acc_goal=cfg.trainer.train_acc_goal,
                progress=cfg.trainer.progress,
                stop_requested=stops.requested,
            )
    except BaseException as e:
        log.close()
        attempt.update({"ended": records.now_iso(), "train_s": time.perf_counter() - t0})
        interrupted = isinstance(e, (KeyboardInterrupt, Terminated))
        reason = str(e) if isinstance(e, Terminated) else "interrupted (KeyboardInterrupt)"
        status.update(
            {
                "status": "FAILED",
                "error": reason if interrupted else "".join(traceback.format_exception_only(type(e), e)).strip(),
                "traceback": None if interrupted else traceback.format_exc(),
            }
        )
        rd.write_status(status)
        raise
    log.close()
    attempt.update({"ended": records.now_iso(), "train_s": time.perf_counter() - t0})
    if result.status == "STOPPED":
        attempt["stopped_at_step"] = state.step
        status.update(
            {
                "status": "STOPPED",
                "stop_reason": result.stop_reason,
                "error": f"stopped by {result.stop_reason} at step {state.step} (checkpoint saved)",
            }
        )
        rd.write_status(status)
        stops.pass_on(f"stopped by {result.stop_reason} at step {state.step}; checkpoint saved")
    wall = earlier_s + attempt["train_s"]
    if not last_row:  # resumed exactly at a finished point: the last row is on disk
        rows = records.read_rows(rd.metrics_path)
        last_row.update(rows[-1] if rows else {})
    summary = {k: v for k, v in last_row.items() if k != "elapsed_s"}
    summary.update(
        {
            "status": result.status,
            "stop_reason": result.stop_reason,
            "steps": state.step,
            "epochs": state.step / b.spec.sampler.steps_per_epoch,
            "best_test_acc": state.best_test_acc,
            "diverged_at_step": result.diverged_at_step,
            "num_params": status["num_params"],
            "wall_time_s": wall,
        }
    )
    rd.write_summary(summary)
    status.update({"status": result.status, "finished": records.now_iso(), "stop_reason": result.stop_reason})
    rd.write_status(status)
    print(summary_table(records.json_safe(summary), rd.path))
    return 0
