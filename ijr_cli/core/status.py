"""`status.json`, typed: a run's `Status` and its `Attempt`s (the counterpart of `RunState` for the checkpoint).

One module reads and writes the file: the run itself (`ijr_cli.run`), the multirun's record of a job that failed
before its run began (`ijr_cli.cli.train`), `ijr-status` and `ijr-report` (`ijr_cli.sweep.state`,
`ijr_cli.report.collect`). The JSON keeps the layout of earlier versions; keys this version does not know are kept
in `other` and written back unchanged.

  status       RUNNING / COMPLETED / FAILED / DIVERGED / STOPPED (STOPPED: by a signal, with a checkpoint)
  attempts     one per process that ran the run: start, end, host, pid, SLURM ids, resumed_from_step,
               stopped_at_step, train_s
  wall_time_s  train_s summed over the attempts; `resumed` whether any attempt continued from a checkpoint
  error, traceback, stop_reason, created, updated, finished, and the run's facts (host, command, cwd, device,
  dtype, git, versions, num_params, total_steps, steps_per_epoch, step_passes)
  loggers      per live logger (`ijr_cli.track`) what a resume needs to continue its run: MLflow's run id, W&B's
               id; `disabled`: why a logger that failed was turned off
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ijr_cli.core import records

STATUSES = records.STATUSES
FINISHED = records.FINISHED


@dataclass
class Attempt:
    """One process's go at a run."""

    started: str
    host: str
    pid: Optional[int] = None
    pid_start_ticks: Optional[int] = None  # with the pid, identifies the process even after the pid is reused
    slurm: Dict[str, str] = field(default_factory=dict)
    resumed_from_step: Optional[int] = None  # None: started from step 0
    ended: Optional[str] = None
    train_s: Optional[float] = None
    stopped_at_step: Optional[int] = None  # a signal stopped it there (with a checkpoint of that step)
    other: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def begin(cls) -> "Attempt":
        """An attempt by this process, starting now."""
        pid = os.getpid()
        return cls(
            started=records.now_iso(),
            host=socket.gethostname(),
            pid=pid,
            pid_start_ticks=records.process_start_ticks(pid),
            slurm=records.slurm_ids(),
        )

    def end(self, train_s: float) -> None:
        self.ended, self.train_s = records.now_iso(), train_s

    def slurm_job_id(self) -> Optional[str]:
        """`ARRAY_TASK` for an array job, else the job id; None outside SLURM."""
        s = self.slurm or {}
        if s.get("SLURM_ARRAY_JOB_ID") and s.get("SLURM_ARRAY_TASK_ID"):
            return f"{s['SLURM_ARRAY_JOB_ID']}_{s['SLURM_ARRAY_TASK_ID']}"
        return s.get("SLURM_JOB_ID")

    def alive_on_this_host(self) -> Optional[bool]:
        """Is its process still running? None when that cannot be told from here (another host, SLURM, no pid)."""
        if self.host != socket.gethostname() or self.slurm or not self.pid:
            return None
        return records.same_process_alive(int(self.pid), self.pid_start_ticks)


@dataclass
class Status:
    """A run's status.json."""

    status: str
    created: str = field(default_factory=records.now_iso)
    attempts: List[Attempt] = field(default_factory=list)
    error: Optional[str] = None
    traceback: Optional[str] = None
    stop_reason: Optional[str] = None
    updated: Optional[str] = None
    finished: Optional[str] = None
    facts: Dict[str, Any] = field(default_factory=dict)  # host, command, device, git, versions, num_params, ...
    loggers: Dict[str, Any] = field(default_factory=dict)  # per live logger its run (MLflow run id, W&B id, ...)
    other: Dict[str, Any] = field(default_factory=dict)

    @property
    def last_attempt(self) -> Optional[Attempt]:
        return self.attempts[-1] if self.attempts else None

    @property
    def wall_time_s(self) -> float:
        """Training time summed over the attempts that ended."""
        return sum(a.train_s or 0.0 for a in self.attempts)

    @property
    def resumed(self) -> bool:
        return any(a.resumed_from_step is not None for a in self.attempts)

    def as_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"status": self.status, "created": self.created}
        out.update(self.facts)
        out["attempts"] = [_attempt_dict(a) for a in self.attempts]
        out.update(
            {
                "error": self.error,
                "traceback": self.traceback,
                "stop_reason": self.stop_reason,
                "updated": self.updated,
                "finished": self.finished,
                "wall_time_s": self.wall_time_s,
                "resumed": self.resumed,
                "loggers": self.loggers or None,
            }
        )
        out.update(self.other)
        return {k: v for k, v in out.items() if v is not None or k in ("error",)}


# keys of status.json that hold a run's facts (written at the start of every attempt)
FACT_KEYS = (
    "host",
    "command",
    "cwd",
    "num_params",
    "total_steps",
    "steps_per_epoch",
    "step_passes",
    "device",
    "device_name",
    "dtype",
    "torch_threads",
    "git",
    "versions",
    "extended_from_steps",
    "pack",  # a packed run: {name, slot, size} of its pack (ijr_cli.run.pack)
)
_STATUS_FIELDS = {f.name for f in dataclasses.fields(Status)} - {"facts", "other"}
_ATTEMPT_FIELDS = {f.name for f in dataclasses.fields(Attempt)} - {"other"}
_DERIVED = ("wall_time_s", "resumed")  # written for readers, recomputed on reading


def _attempt_dict(a: Attempt) -> Dict[str, Any]:
    out = {
        k: getattr(a, k)
        for k in (
            "started",
            "host",
            "pid",
            "pid_start_ticks",
            "slurm",
            "resumed_from_step",
            "ended",
            "train_s",
            "stopped_at_step",
        )
    }
    out.update(a.other)
    return {k: v for k, v in out.items() if v is not None or k == "resumed_from_step"}


def from_dict(raw: Dict[str, Any]) -> Optional[Status]:
    """A Status from a parsed status.json, or None when it is not one of ijr's."""
    if not isinstance(raw, dict) or raw.get("status") not in STATUSES:
        return None
    attempts = []
    for a in raw.get("attempts") or []:
        if isinstance(a, dict):
            known = {k: v for k, v in a.items() if k in _ATTEMPT_FIELDS}
            known.setdefault("started", "")
            known.setdefault("host", "")
            attempts.append(Attempt(**known, other={k: v for k, v in a.items() if k not in _ATTEMPT_FIELDS}))
    kw = {k: raw[k] for k in _STATUS_FIELDS - {"attempts"} if k in raw}
    facts = {k: raw[k] for k in FACT_KEYS if k in raw}
    other = {k: v for k, v in raw.items() if k not in _STATUS_FIELDS and k not in FACT_KEYS and k not in _DERIVED}
    kw.setdefault("created", "")
    return Status(**kw, attempts=attempts, facts=facts, other=other)


def read_status(path: Path) -> Optional[Status]:
    """The run's Status; None when the file is absent, unreadable, or not an ijr status."""
    return from_dict(records.read_json(path))


def write_status(path: Path, status: Status) -> None:
    """Atomically (a temporary file renamed over the old one), with `updated` set to now."""
    status.updated = records.now_iso()
    records.write_json_atomic(path, status.as_dict())
