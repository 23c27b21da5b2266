"""One training run from a typed config: checks, resume, status bookkeeping, summary.

Order matters for "nothing half-written": every check that can fail on bad input (values, run directory state,
data files, sizes, model/data compatibility, metric names) runs before the first byte is written.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import yaml

import ijr_cli
from ijr_cli import records
from ijr_cli.config import TrainConfig, validate
from ijr_cli.data import BatchSampler, Dataset, load_dataset, resolve_device
from ijr_cli.errors import Terminated, UserError
from ijr_cli.measure import GROUP_OF, GROUPS, Measurer, Schedule, check_metric_names, evaluate, flat_parameters
from ijr_cli.models import build_model, count_parameters
from ijr_cli.objectives import Objective
from ijr_cli.optim import build_sgd, lr_factor
from ijr_cli.train import RunState, StepSpec, fit, load_checkpoint, save_checkpoint, step_passes, train_step


def check_run_directory(rd: records.RunDirectory, config_yaml: str) -> Optional[dict]:
    """The stored status of a run to resume (None for a new run); UserError when the directory can't be used."""
    status = rd.read_status()
    if rd.status_path.exists() and status is None:
        raise UserError(f"{rd.status_path} is unreadable; move the run directory away or choose another hydra.run.dir")
    conflict = records.config_conflict(rd.config_path, config_yaml)
    if conflict:
        raise UserError(f"run directory {rd.path} holds a run with a different config ({conflict}); "
                        f"use the same overrides to resume, or another hydra.run.dir")
    if status and status.get("status") == "RUNNING":
        last = (status.get("attempts") or [{}])[-1]
        if last.get("host") == socket.gethostname() and last.get("pid") not in (None, os.getpid()) \
                and records.same_process_alive(int(last["pid"]), last.get("pid_start_ticks")):
            raise UserError(f"run directory {rd.path} is in use by process {last['pid']} on this host; "
                            f"wait for it or stop it")
    return status


class StopSignals:
    """SIGTERM, and SIGUSR2 (SLURM's warning before a time limit or a preemption, asked for with `--signal`),
    make the training loop stop at the next step boundary with a checkpoint of that step; a second SIGTERM
    stops at once. On leaving, the handlers in place before are restored. Under submitit, SIGUSR2's previous
    handler is submitit's "checkpoint and requeue": `pass_on` calls it once the checkpoint is on disk, so the
    requeued job resumes exactly where this one stopped."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.signum: Optional[int] = None
        self.previous: Dict[int, object] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handler(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGTERM:
            raise Terminated("terminated (second SIGTERM, without waiting for the step to end)")
        self.signum = signum

    def requested(self) -> Optional[str]:
        if self.signum is None:
            return None
        name = signal.Signals(self.signum).name
        return f"signal {name}" + (" (time limit or preemption)" if self.signum == signal.SIGUSR2 else "")

    def pass_on(self, message: str) -> None:
        """After the stop is recorded: hand SIGUSR2 to submitit's handler (which requeues the job and exits);
        otherwise end the process with `Terminated`."""
        previous = self.previous.get(self.signum)
        if self.signum == signal.SIGUSR2 and callable(previous):
            previous(self.signum, None)
        raise Terminated(message)


@dataclass
class Built:
    """What a run is made of, built from the config (no file written yet)."""

    data: Dataset
    state: RunState
    spec: StepSpec
    objective: Objective
    total_steps: int
    device: torch.device
    measurer: Measurer
    schedule: Schedule


def build(cfg: TrainConfig) -> Built:
    t, d, o, m, r = cfg.trainer, cfg.dataset, cfg.optimizer, cfg.model, cfg.regularizer
    device = resolve_device(t.device)
    dtype = torch.float64 if t.dtype.value == "float64" else torch.float32
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    names = check_metric_names(cfg.metrics.names)
    unknown_keys = [k for k in cfg.metrics.every if k not in GROUP_OF and k not in GROUPS]
    if unknown_keys:
        raise UserError(f"metrics.every has unknown key(s) {', '.join(unknown_keys)}; use metric names from "
                        f"metrics.names (or group names: {', '.join(GROUPS)})")
    data = load_dataset(d.name, data_dir=d.data_dir, download=d.download, path=d.path, n_train=d.n_train,
                        n_test=d.n_test, standardize=d.standardize.value, input_scale=d.input_scale,
                        input_shape=list(d.input_shape), num_classes=d.num_classes,
                        num_train_examples=d.num_train_examples, num_test_examples=d.num_test_examples,
                        class_separation=d.class_separation, generator_seed=d.generator_seed,
                        device=device, dtype=dtype)
    sampler = BatchSampler(data.n_train, o.batch_size, cfg.seed, device)
    if cfg.regularizer.augment and len(data.input_shape) != 3:
        raise UserError(f"regularizer augment needs image inputs (C,H,W); dataset={d.name} gives shape "
                        f"{data.input_shape}: drop augment")
    torch.manual_seed(cfg.seed)  # the model's initialisation is a function of `seed` alone
    model = build_model(m.name, data.input_shape, data.num_classes, activation=m.activation.value,
                        widths=list(m.widths), batch_norm=m.batch_norm, dropout=m.dropout, depth=m.depth,
                        width_factor=m.width_factor).to(device=device, dtype=dtype)
    optimizer = build_sgd(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                          weight_decay=o.weight_decay)
    objective = Objective(cfg.loss.name.value, data.num_classes, cfg.regularizer.label_smoothing,
                          cfg.loss.target_scale)
    spec = StepSpec(objective=objective, sampler=sampler, seed=cfg.seed, augment=cfg.regularizer.augment,
                    mixup_alpha=cfg.regularizer.mixup_alpha, grad_chunk=t.grad_chunk,
                    sam_rho=o.rho if o.name.value == "sam" else None, sam_adaptive=o.adaptive,
                    ejr=None if r.jacobian.value == "none" else r.jacobian.value, lambda_reg=r.lambda_reg,
                    rho_reg=r.rho_reg, mu_reg=r.mu_reg)
    total = math.ceil(t.epochs * sampler.steps_per_epoch) if t.epochs is not None else t.max_steps
    state = RunState(model=model, optimizer=optimizer)
    mc, pc = cfg.metrics, cfg.probe
    measurer = Measurer(model=model, data=data, objective=objective, names=names,
                        init_params=flat_parameters(model).clone(),
                        probe_n=pc.n, probe_chunk=pc.chunk, probe_bn_mode=pc.bn_mode.value,
                        probe_cache_graph=pc.cache_graph,
                        sharpness_k=mc.sharpness_k, lanczos_tol=mc.lanczos_tol,
                        lanczos_max_iters=mc.lanczos_max_iters, n_input_jac=mc.n_input_jac, momentum=o.momentum,
                        nesterov=o.nesterov, seed=cfg.seed, warm=state.measure_state)
    return Built(data=data, state=state, spec=spec, objective=objective, total_steps=total, device=device,
                 measurer=measurer, schedule=metric_schedule(cfg, names, total))


def metric_schedule(cfg: TrainConfig, names: List[str], total_steps: int) -> Schedule:
    """Cadence per group: the smallest `metrics.every` of its requested names (or of the group), else
    `metrics.default_every`, else `trainer.eval_every`; the train/test evaluation every `trainer.eval_every`."""
    default = cfg.metrics.default_every or cfg.trainer.eval_every
    every = {"eval": cfg.trainer.eval_every}
    for name in names:
        group = GROUP_OF[name]
        own = cfg.metrics.every.get(name, cfg.metrics.every.get(group, default))
        every[group] = min(every.get(group, own), own)
    ordered = {g: every[g] for g in GROUPS if g in every}  # GROUPS order: shared work is computed first
    return Schedule(ordered, total_steps, cfg.metrics.early_steps)


def environment(device: torch.device, dtype: str) -> Dict[str, object]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else records.cpu_name()
    return {"device": str(device), "device_name": name, "dtype": dtype, "torch_threads": torch.get_num_threads(),
            "git": records.git_info(Path(ijr_cli.__file__).resolve().parent), "versions": records.package_versions()}


def summary_table(summary: dict, run_dir: Path) -> str:
    """The few lines printed at the end of a run."""
    def fmt(v):
        return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    head = (f"ijr-train: {summary['status']} ({summary['stop_reason']}) after {summary['steps']} steps "
            f"in {summary['wall_time_s']:.1f} s -> {run_dir}")
    lines = [head, f"  {'':18}{'train':>10}{'test':>10}{'gap':>10}"]
    for label, tr, te, gap in (("loss (as trained)", "train_loss", "test_loss", None),
                               ("cross-entropy", "train_ce", "test_ce", "gen_gap_loss"),
                               ("accuracy", "train_acc", "test_acc", "gen_gap_acc")):
        lines.append(f"  {label:18}{fmt(summary.get(tr)):>10}{fmt(summary.get(te)):>10}"
                     f"{fmt(summary.get(gap)) if gap else '':>10}")
    lines.append(f"  best test accuracy {fmt(summary.get('best_test_acc'))}; {summary['num_params']:,} parameters")
    if summary.get("sharpness") is not None and summary.get("threshold"):
        ratio = summary["sharpness"] / summary["threshold"]
        lines.append(f"  sharpness {summary['sharpness']:.4g} vs stability threshold {summary['threshold']:.4g} "
                     f"(ratio {ratio:.3f}{'; at the edge of stability' if abs(ratio - 1) <= 0.15 else ''})")
    return "\n".join(lines)


def run(cfg: TrainConfig, *, run_dir: Path, config_yaml: str, overrides: List[str]) -> int:
    """Train (or resume, or report a finished run); returns the process exit code (0 also for DIVERGED)."""
    validate(cfg)
    rd = records.RunDirectory(run_dir)
    stored = check_run_directory(rd, config_yaml)
    if stored and stored.get("status") in records.FINISHED:
        summary = rd.read_summary()
        print(f"ijr-train: {rd.path} already {stored['status']}; not run again (use another hydra.run.dir "
              f"to train anew)")
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
            raise UserError(f"{rd.checkpoint_path} cannot be loaded ({type(e).__name__}); delete it to restart "
                            f"the run from step 0") from None

    # ---- from here on, files are written
    rd.path.mkdir(parents=True, exist_ok=True)
    if not rd.config_path.exists():
        rd.config_path.write_text(config_yaml)
        rd.overrides_path.write_text(yaml.safe_dump(list(overrides)))
    status = stored or {"status": "RUNNING", "created": records.now_iso(), "attempts": []}
    status.update({"status": "RUNNING", "error": None, "host": socket.gethostname(), "command": sys.argv,
                   "cwd": os.getcwd(),
                   "num_params": count_parameters(state.model), "total_steps": b.total_steps,
                   "steps_per_epoch": b.spec.sampler.steps_per_epoch, "step_passes": step_passes(b.spec),
                   **environment(b.device, cfg.trainer.dtype.value)})
    attempt = {"started": records.now_iso(), "host": socket.gethostname(), "pid": os.getpid(),
               "pid_start_ticks": records.process_start_ticks(os.getpid()),
               "slurm": records.slurm_ids(), "resumed_from_step": None}
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
        return o.lr * lr_factor(step, b.total_steps, s.name.value, gamma=s.gamma, milestones=list(s.milestones),
                                warmup_steps=s.warmup_steps, min_lr_factor=s.min_lr_factor)

    stops = StopSignals()
    try:
        with stops:
            result = fit(state, total_steps=b.total_steps,
                         step_fn=lambda step: train_step(state.model, state.optimizer, b.data, step, b.spec),
                         evaluate=evaluate_row, log=log_row, checkpoint=checkpoint, lr_at=lr_at,
                         row_due=b.schedule.any_due,
                         checkpoint_every=cfg.trainer.checkpoint_every,
                         sync_every=cfg.trainer.sync_every, train_acc_goal=cfg.trainer.train_acc_goal,
                         progress=cfg.trainer.progress, stop_requested=stops.requested)
    except BaseException as e:
        log.close()
        attempt.update({"ended": records.now_iso(), "train_s": time.perf_counter() - t0})
        interrupted = isinstance(e, (KeyboardInterrupt, Terminated))
        reason = str(e) if isinstance(e, Terminated) else "interrupted (KeyboardInterrupt)"
        status.update({"status": "FAILED",
                       "error": reason if interrupted else "".join(traceback.format_exception_only(type(e), e)).strip(),
                       "traceback": None if interrupted else traceback.format_exc()})
        rd.write_status(status)
        raise
    log.close()
    attempt.update({"ended": records.now_iso(), "train_s": time.perf_counter() - t0})
    if result.status == "STOPPED":
        attempt["stopped_at_step"] = state.step
        status.update({"status": "STOPPED", "stop_reason": result.stop_reason,
                       "error": f"stopped by {result.stop_reason} at step {state.step} (checkpoint saved)"})
        rd.write_status(status)
        stops.pass_on(f"stopped by {result.stop_reason} at step {state.step}; checkpoint saved")
    wall = earlier_s + attempt["train_s"]
    if not last_row:  # resumed exactly at a finished point: the last row is on disk
        rows = records.read_rows(rd.metrics_path)
        last_row.update(rows[-1] if rows else {})
    summary = {k: v for k, v in last_row.items() if k != "elapsed_s"}
    summary.update({"status": result.status, "stop_reason": result.stop_reason, "steps": state.step,
                    "epochs": state.step / b.spec.sampler.steps_per_epoch, "best_test_acc": state.best_test_acc,
                    "diverged_at_step": result.diverged_at_step, "num_params": status["num_params"],
                    "wall_time_s": wall})
    rd.write_summary(summary)
    status.update({"status": result.status, "finished": records.now_iso(), "stop_reason": result.stop_reason})
    rd.write_status(status)
    print(summary_table(records.json_safe(summary), rd.path))
    return 0
