"""A PACK: K runs of one architecture trained and measured together in one process, each an ordinary run.

Every member has its own run directory in exactly the format of a sequential run (config.yaml, overrides.yaml,
metrics.jsonl, arrays.bin, summary.json, status.json with a `pack` record naming the pack and the member's slot,
and its own checkpoint.pt, which a sequential `ijr-train` of that directory resumes too), so `ijr-status`,
`ijr-report`, rerun-skips-finished and SLURM requeue work unchanged. The members are built exactly as their
sequential runs (`run.build.build`, one dataset shared), stacked (`stack.ModelStack`), stepped by
`train.packed.packed_train_step` in `train.pack_loop.fit_pack` and measured by `measure.packed.PackedMeasurer`.

Members that cannot be packed (a model with BatchNorm or dropout, a COMPLETED run being extended) run alone,
one after another, as `ijr-train` would run them; a member whose config is refused fails alone. Members resumed
from checkpoints of different steps (a pack killed between two members' checkpoint writes) are packed by step.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.arrays import ArrayLog
from ijr_cli.core.config import TrainConfig, validate
from ijr_cli.core.errors import StorageError, UserError
from ijr_cli.core.status import Attempt, Status, write_status
from ijr_cli.measure.packed import PackedMeasurer
from ijr_cli.run import experiment, lifecycle
from ijr_cli.run.build import Built, build
from ijr_cli.run.lock import RunLock
from ijr_cli.run.signals import StopSignals
from ijr_cli.stack import ModelStack, unstackable_reason
from ijr_cli.track.base import Loggers, RunInfo, check_installed, selected
from ijr_cli.track.live import loggers_for_run
from ijr_cli.train.pack_loop import fit_pack
from ijr_cli.train.packed import PackedSpec, StackedSGD, packed_train_step
from ijr_cli.train.state import save_checkpoint


@dataclass
class PackJob:
    """One member: its typed config, run directory, resolved config (YAML) and overrides."""

    cfg: TrainConfig
    run_dir: Path
    config_yaml: str
    overrides: List[str]


@dataclass
class _Member:
    slot: int
    job: PackJob
    rd: records.RunDirectory
    stored: Optional[Status]
    b: Built
    checkpoint: Optional[dict]
    status: Optional[Status] = None
    attempt: Optional[Attempt] = None
    log: Optional[records.MetricsLog] = None
    arrays: Optional[ArrayLog] = None
    last_row: Dict[str, object] = field(default_factory=dict)
    lr_at: object = None
    loggers: Optional[Loggers] = None  # its own live loggers' runs


def run_pack(
    jobs: List[PackJob], name: str, size: Union[int, str, None] = None, force_packed: bool = False
) -> Dict[int, str]:
    """Run the jobs of one pack; returns {job index: why it was refused} for the jobs refused at pre-flight (each
    fails alone), the others having run to COMPLETED, DIVERGED or STOPPED (or raised: every member of the group
    is then recorded FAILED). A stop signal stops every member at one step boundary with a checkpoint (and then
    ends the process as `ijr-train` does); the same call resumes them. `size`: train at most that many members
    at once, "auto" as many as fit the free memory (`auto_pack_size`), None all of them. A group of one member runs
    as an ordinary run (`force_packed`: through the pack's machinery all the same, as the benchmark measures it)."""
    failures: Dict[int, str] = {}
    stops = StopSignals()
    with contextlib.ExitStack() as held:
        members: List[_Member] = []
        alone: List[int] = []
        datasets: Dict[str, object] = {}
        for i, job in enumerate(jobs):
            try:
                validate(job.cfg)
                check_installed(selected(job.cfg.logger))
                held.enter_context(RunLock(job.run_dir))
                rd, stored, extending = lifecycle.open_run_directory(job.run_dir, job.config_yaml)
                if lifecycle.is_finished(stored) and not extending:
                    print(f"ijr-train: {rd.path} already {stored.status}; not run again")
                    continue
                key = _data_key(job.cfg)
                b = build(job.cfg, data=datasets.get(key))
                datasets[key] = b.data
                if extending or unstackable_reason(b.state.model):
                    alone.append(i)
                    continue
                checkpoint = lifecycle.read_checkpoint(rd, stored, b.device)
                members.append(_Member(len(members), job, rd, stored, b, checkpoint))
            except UserError as e:
                failures[i] = str(e)
        by_step: Dict[int, List[_Member]] = {}
        for m in members:
            by_step.setdefault(int(m.checkpoint["step"]) if m.checkpoint else 0, []).append(m)
        if size == "auto" and members:
            size = auto_pack_size(members[0].b)
            print(f"ijr-train: pack {name}: {len(members)} member(s), at most {size} at once (--pack auto)")
        groups = [g[i : i + (size or len(g))] for g in by_step.values() for i in range(0, len(g), size or len(g))]
        stopped = None
        with stops:
            for group in groups:
                if len(group) == 1 and not force_packed:  # a pack of one is an ordinary run: no machinery to pay
                    job = group[0].job
                    experiment._run(job.cfg, job.run_dir, job.config_yaml, job.overrides)
                    continue
                stopped = _run_members(group, name, len(members), stops)
                if stopped:
                    break
        if stopped:
            stops.pass_on(f"pack {name}: {len(members)} member(s) stopped by {stopped}; checkpoints saved")
        for i in alone:
            job = jobs[i]
            try:
                experiment._run(job.cfg, job.run_dir, job.config_yaml, job.overrides)
            except UserError as e:
                failures[i] = str(e)
    return failures


def _data_key(cfg: TrainConfig) -> str:
    """Members whose data configs (and device, dtype) agree share one loaded dataset."""
    return f"{cfg.dataset!r}/{cfg.trainer.device}/{cfg.trainer.dtype.value}"


def member_bytes(b: Built) -> int:
    """Memory one member adds to a pack, estimated: its parameters, gradients, momentum and SAM/EJR perturbation
    (stacked), and the activations of its largest pass (a training batch, or the probe set whose gradient graph the
    Hessian products hold), three copies each for the backward and double backward."""
    model = b.state.model
    params = sum(p.numel() for p in model.parameters())
    element = next(model.parameters()).element_size()
    copies = 3 + (b.state.optimizer.defaults["momentum"] != 0) + (b.spec.sam_rho is not None or b.spec.ejr is not None)
    activations = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor) and not list(module.children()):
            activations[0] += output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(b.data.x_train[:1])
    finally:
        for h in hooks:
            h.remove()
    batch = min(b.spec.sampler.batch_size, b.spec.grad_chunk or b.spec.sampler.batch_size)
    probe = b.measurer.x_probe.shape[0] if "sharpness" in b.measurer.groups else 0
    return int(element * (params * copies + 3 * activations[0] * max(batch, probe, b.measurer.probe_chunk or 0)))


def available_bytes(device: torch.device) -> int:
    """Free memory where the pack runs: the GPU's free memory, or the host's available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info.get("MemAvailable", info.get("MemFree", 0))


MEMORY_MARGIN = 0.5  # --pack auto uses at most this fraction of the free memory


def auto_pack_size(b: Built) -> int:
    """The largest K whose estimated memory (`member_bytes` x K) fits `MEMORY_MARGIN` of the free memory."""
    return max(1, int(MEMORY_MARGIN * available_bytes(b.device) // max(member_bytes(b), 1)))


def _run_members(members: List[_Member], name: str, size: int, stops: StopSignals) -> Optional[str]:
    """One group of members that start from the same step: stacked, trained and measured together. Returns the
    stop signal's reason when they were stopped."""
    for m in members:
        facts = {**experiment.run_facts(m.job.cfg, m.b), "pack": {"name": name, "slot": m.slot, "size": size}}
        m.status, m.attempt = lifecycle.begin_attempt(m.rd, m.stored, m.job.config_yaml, m.job.overrides, facts)
        m.log, m.arrays = records.MetricsLog(m.rd.metrics_path), ArrayLog(m.rd.path)
        m.lr_at = experiment.lr_schedule(m.job.cfg, m.b.total_steps)
        info = RunInfo.of(m.rd.path, m.job.config_yaml, m.job.overrides, m.status.facts.get("git"))
        m.loggers = loggers_for_run(m.job.cfg.logger, info)
    t0 = time.perf_counter()
    try:
        for m in members:
            lifecycle.resume(m.b.state, m.checkpoint, m.log, m.arrays, m.attempt)
            m.loggers.start(m.status, m.b.state.last_logged_step + 1, m.rd.metrics_path)
            write_status(m.rd.status_path, m.status)
        with contextlib.ExitStack() as logs:
            for m in members:
                logs.enter_context(m.log.open())
                logs.enter_context(m.arrays.open())
            results = _fit(members, stops, started=t0)
        for i, m in enumerate(members):
            result, elapsed = results[i], time.perf_counter() - t0
            summary: dict = {}
            if result.status == "STOPPED":
                lifecycle.record_stop(m.rd, m.status, m.attempt, result, m.b.state.step, elapsed)
            else:
                summary = lifecycle.finish(
                    m.rd, m.status, m.attempt, result, m.b.state, m.last_row, m.b.spec.sampler.steps_per_epoch, elapsed
                )
            lifecycle.finish_loggers(m.rd, m.status, m.loggers, summary)
            print(f"ijr-train: {m.rd.path}: {m.status.status} at step {m.b.state.step} ({m.status.stop_reason})")
        stopped = [r.stop_reason for r in results.values() if r.status == "STOPPED"]
        return stopped[0] if stopped else None
    except StorageError as e:
        for m in members:
            lifecycle.record_storage_failure(m.rd, m.status, m.attempt, e, time.perf_counter() - t0)
            m.loggers.finish("FAILED", {})
        raise
    except BaseException as e:
        for m in members:
            lifecycle.record_failure(m.rd, m.status, m.attempt, e, time.perf_counter() - t0)
            m.loggers.finish("FAILED", {})
        raise
    finally:
        for m in members:
            m.loggers.close()
            lifecycle.release_reserve(m.rd)


def _fit(members: List[_Member], stops: StopSignals, *, started: float):
    """The pack loop wired to its members: the stacked step, their rows, logs, checkpoints and lr schedules."""
    b0, cfg0 = members[0].b, members[0].job.cfg
    states = [m.b.state for m in members]
    stack = ModelStack([s.model for s in states])
    device, dtype = stack.params[0].device, stack.params[0].dtype
    spec = PackedSpec.of([m.b.spec for m in members], [m.b.data for m in members], device, dtype)
    optimizer = StackedSGD(
        stack,
        [m.job.cfg.optimizer.momentum for m in members],
        [m.job.cfg.optimizer.weight_decay for m in members],
        cfg0.optimizer.nesterov,
    )
    _load_momentum(members, optimizer)
    lr_table = torch.tensor(
        [[m.lr_at(s) for m in members] for s in range(b0.total_steps)], device=device, dtype=dtype
    ).reshape(b0.total_steps, len(members))
    measurer = PackedMeasurer(stack, [m.b.measurer for m in members], spec.objectives, cfg0.trainer.eval_batch_size)
    earlier = [m.status.wall_time_s for m in members]
    writers = [experiment.row_writer(m.log, m.arrays, m.last_row, m.loggers) for m in members]

    def evaluate_rows(step: int, which: List[int]) -> Dict[int, Dict[str, object]]:
        groups = b0.schedule.due(step)
        rows: Dict[int, Dict[str, object]] = {i: {} for i in which}
        if "eval" in groups:
            for i, values in measurer.evaluate(which).items():
                rows[i].update(values)
        lrs = {i: members[i].lr_at(max(step - 1, 0)) for i in which}
        for i, values in measurer.measure(groups, lrs, step).items():
            rows[i].update(values)
        for i in which:
            rows[i][M.ELAPSED_S] = earlier[i] + time.perf_counter() - started
        return rows

    def checkpoint(which: List[int]) -> None:
        for i in which:
            m = members[i]
            _store_momentum(m, optimizer, i)
            save_checkpoint(m.rd.checkpoint_path, _own_tensors(m.b.state.checkpoint_dict()))

    return fit_pack(
        states,
        total_steps=b0.total_steps,
        step_fn=lambda step, active: packed_train_step(stack, optimizer, step, spec, lr_table[step], active),
        evaluate=evaluate_rows,
        log=lambda i, row: writers[i](row),
        checkpoint=checkpoint,
        lr_at=lambda i, step: members[i].lr_at(step),
        row_due=b0.schedule.any_due,
        checkpoint_every=cfg0.trainer.checkpoint_every,
        sync_every=cfg0.trainer.sync_every,
        train_acc_goal=[m.job.cfg.trainer.train_acc_goal for m in members],
        progress=cfg0.trainer.progress,
        log_paths=[m.rd.path / experiment.LOG_NAME for m in members],
        stop_requested=stops.requested,
    )


def _load_momentum(members: List[_Member], optimizer: StackedSGD) -> None:
    """A resumed member's momentum buffers (in its torch optimizer's state) into the stacked buffers."""
    if optimizer.buffers is None:
        return
    for i, m in enumerate(members):
        opt = m.b.state.optimizer
        for j, p in enumerate(m.b.state.model.parameters()):
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                optimizer.buffers[j][i].copy_(buf)


def _store_momentum(m: _Member, optimizer: StackedSGD, i: int) -> None:
    """Member i's momentum buffers and lr into its torch optimizer's state, as a sequential run's would be."""
    opt = m.b.state.optimizer
    for group in opt.param_groups:
        group["lr"] = m.lr_at(max(m.b.state.step - 1, 0))
    if optimizer.buffers is None or m.job.cfg.optimizer.momentum == 0 or m.b.state.step == 0:
        return
    for j, p in enumerate(m.b.state.model.parameters()):
        opt.state[p]["momentum_buffer"] = optimizer.buffers[j][i].detach().clone()


def _own_tensors(ckpt: dict) -> dict:
    """The member's model tensors copied out of the stack (a view would save the whole stack's storage)."""
    ckpt["model"] = {k: v.clone() for k, v in ckpt["model"].items()}
    return ckpt
