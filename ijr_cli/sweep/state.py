"""The state of a sweep directory: what finished, what runs or waits, what failed, what is missing. No torch.

Sources, most trusted first:
  <run dir>/status.json   written by the run itself (RUNNING / COMPLETED / FAILED / DIVERGED / STOPPED)
  SLURM's queue           `squeue` for jobs not yet started, requeued, or killed without writing (time limit
                          without a checkpoint, OOM, scancel); finished jobs stay visible for MinJobAge
  sweep.yaml              the jobs `ijr-sweep` expects (so that a job that never started shows as MISSING)
  submissions.jsonl       one line per job given to SLURM (written by the `ijr_slurm` launcher)

Every job falls in one of five buckets (BUCKETS); `detail` says why.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import yaml

from ijr_cli.core import metric_names as M
from ijr_cli.core import records
from ijr_cli.core.status import read_status

BUCKETS = ("COMPLETED", "RUNNING", "FAILED", "DIVERGED", "MISSING")
PLAN_FILE = "sweep.yaml"
LEDGER_FILE = "submissions.jsonl"
# SLURM states in which a job will still run (or runs): such a run is not submitted again
SLURM_ACTIVE = {
    "PENDING",
    "RUNNING",
    "CONFIGURING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
}


def tiny_hint(path: Path, command: str = "status") -> str:
    """For a sweep directory that does not exist while its --tiny version does: where that one is, and the
    `make COMMAND` / `ijr-COMMAND` that reads it (status or report)."""
    path = Path(path)
    tiny = path.with_name(path.name + "-tiny")
    if not path.exists() and tiny.is_dir():
        return (
            f"; only the --tiny version of this sweep exists here: {tiny} (make {command} SWEEP={path.name} TINY=1, "
            f"or ijr-{command} {tiny})"
        )
    return ""


# ------------------------------------------------------------------------------------------ files
def record_submissions(sweep_dir: Path, entries: Iterable[dict]) -> None:
    """Append one line per submitted job: job_id, run_dir (its name below the sweep dir), overrides."""
    stamp = records.now_iso()
    with open(Path(sweep_dir) / LEDGER_FILE, "a") as f:
        for entry in entries:
            f.write(json.dumps({"submitted": stamp, **entry}) + "\n")


def read_submissions(sweep_dir: Path) -> Dict[str, dict]:
    """The latest submission of each run directory name."""
    latest: Dict[str, dict] = {}
    for row in records.read_rows(Path(sweep_dir) / LEDGER_FILE):
        if row.get("run_dir"):
            latest[row["run_dir"]] = row
    return latest


def write_plan(sweep_dir: Path, plan: dict) -> None:
    records.write_atomic(Path(sweep_dir) / PLAN_FILE, yaml.safe_dump(plan, sort_keys=False, width=120))


def read_plan(sweep_dir: Path) -> Optional[dict]:
    try:
        plan = yaml.load(
            (Path(sweep_dir) / PLAN_FILE).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    except (OSError, yaml.YAMLError):
        return None
    return plan if isinstance(plan, dict) else None


def last_rows(metrics_path: Path, tail_bytes: int = 65536) -> List[dict]:
    """The complete rows at the end of a metrics.jsonl (reading only its last `tail_bytes`), oldest first."""
    try:
        with open(metrics_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - tail_bytes))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def last_row(metrics_path: Path, tail_bytes: int = 8192) -> Optional[dict]:
    """The last complete row of a metrics.jsonl, reading only its end."""
    rows = last_rows(metrics_path, tail_bytes)
    return rows[-1] if rows else None


def _latest(rows: List[dict], key: str) -> Optional[float]:
    """The latest value of `key` among the rows (measured metrics are not in every row)."""
    for row in reversed(rows):
        value = row.get(key)
        if isinstance(value, (int, float)):
            return value
    return None


# ------------------------------------------------------------------------------------------ SLURM
def slurm_queue() -> Optional[Dict[str, str]]:
    """State of this user's jobs that SLURM still knows, by array id (123_4) and by job id; None when
    there is no SLURM here (no squeue, or it fails)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%A|%T"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    states: Dict[str, str] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = states[parts[1]] = parts[2]
    return states


# ------------------------------------------------------------------------------------------ classification
@dataclass
class JobState:
    name: str  # the run directory's name below the sweep dir
    bucket: str
    detail: str = ""
    overrides: List[str] = field(default_factory=list)
    job_id: Optional[str] = None
    step: Optional[int] = None
    total_steps: Optional[int] = None
    run_status: Optional[str] = None  # the run's own status.json status (STOPPED is in the FAILED bucket)
    stop_reason: Optional[str] = None
    test_acc: Optional[float] = None  # the latest logged values
    sharpness: Optional[float] = None
    threshold: Optional[float] = None

    @property
    def label(self) -> str:
        """The bucket, or STOPPED for a run a signal stopped with a checkpoint (it resumes when launched again)."""
        return "STOPPED" if self.run_status == "STOPPED" and self.bucket == "FAILED" else self.bucket

    def measures(self) -> str:
        """`step 700/3000  test_acc 0.912  S/2η 18.2/20` (what is known)."""
        parts = []
        if self.step is not None and self.total_steps:
            parts.append(f"step {self.step}/{self.total_steps}")
        if self.test_acc is not None:
            parts.append(f"test_acc {self.test_acc:.4f}")
        if self.sharpness is not None:
            ratio = f"/{self.threshold:.4g}" if self.threshold is not None else ""
            parts.append(f"S/2η {self.sharpness:.4g}{ratio}")
        return "  ".join(parts)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "bucket": self.bucket,
            "detail": self.detail,
            "overrides": self.overrides,
            "job_id": self.job_id,
            "step": self.step,
            "total_steps": self.total_steps,
            "run_status": self.run_status,
            "stop_reason": self.stop_reason,
            "test_acc": self.test_acc,
            "sharpness": self.sharpness,
            "threshold": self.threshold,
        }


def classify(
    run_dir: Path,
    name: str,
    overrides: List[str],
    submission: Optional[dict],
    queue: Optional[Dict[str, str]],
    finished_tails: bool = True,
) -> JobState:
    """One job's bucket from its run directory, its latest SLURM submission and the queue. The latest step and
    measures come from the tail of metrics.jsonl; `finished_tails=False` skips it for COMPLETED runs (ijr-report
    reads their whole history anyway, and lists only the others' steps: 3 s saved at 1,000 runs)."""
    status = read_status(run_dir / "status.json")
    last = status.last_attempt if status else None
    job_id = (submission or {}).get("job_id") or (last.slurm_job_id() if last else None)
    slurm_state = (queue or {}).get(job_id) if job_id else None
    active = slurm_state in SLURM_ACTIVE
    state = JobState(name=name, bucket="MISSING", overrides=overrides, job_id=job_id)
    if status is None:
        if (run_dir / "status.json").exists():
            state.bucket, state.detail = "FAILED", f"{run_dir / 'status.json'} is unreadable"
        elif active:
            state.bucket, state.detail = "RUNNING", f"SLURM job {job_id} {slurm_state}"
        elif submission:
            state.detail = f"SLURM job {job_id} {slurm_state or 'no longer known to SLURM'}; the run never started"
        return state
    s = status.status
    state.run_status, state.stop_reason = s, status.stop_reason
    state.total_steps = status.facts.get("total_steps")
    rows = last_rows(run_dir / "metrics.jsonl") if finished_tails or s != "COMPLETED" else []
    state.step = rows[-1].get("step") if rows else None
    state.test_acc = _latest(rows, M.TEST_ACC)
    state.sharpness, state.threshold = _latest(rows, M.SHARPNESS), _latest(rows, M.THRESHOLD)
    if s in ("COMPLETED", "DIVERGED"):
        state.bucket = s
        state.detail = status.stop_reason or ""
        return state
    if active:
        state.bucket = "RUNNING"
        state.detail = f"SLURM job {job_id} {slurm_state}" + (
            f" (run {s.lower()}: {status.error})" if s in ("FAILED", "STOPPED") else ""
        )
        return state
    if s == "RUNNING":
        if slurm_state is not None:
            state.bucket, state.detail = "FAILED", f"SLURM job {job_id} ended {slurm_state} while the run was running"
        elif last is not None and last.alive_on_this_host() is False:
            state.bucket, state.detail = "FAILED", f"process {last.pid} on this host is gone (killed?)"
        else:
            state.bucket = "RUNNING"
            state.detail = f"on {last.host if last and last.host else '?'}" + (
                f", SLURM job {job_id}" if job_id else ""
            )
        return state
    state.bucket = "FAILED"
    state.detail = (status.error or s or "unknown status").strip().splitlines()[-1]
    if s == "STOPPED":
        state.detail += "; not requeued: running the sweep again resumes it"
    return state


def expected_jobs(sweep_dir: Path) -> Dict[str, List[str]]:
    """Run directory name -> its overrides: the plan's jobs, the submitted ones, and every run directory."""
    sweep_dir = Path(sweep_dir)
    jobs: Dict[str, List[str]] = {}
    plan = read_plan(sweep_dir)
    for job in (plan or {}).get("jobs") or []:
        jobs[job["name"]] = list(job.get("overrides") or [])
    for name, entry in read_submissions(sweep_dir).items():
        jobs.setdefault(name, list(entry.get("overrides") or []))
    for status_path in sorted(sweep_dir.glob("*/status.json")):
        name = status_path.parent.name
        if name not in jobs:
            jobs[name] = _read_overrides(status_path.parent)
    return jobs


def _read_overrides(run_dir: Path) -> List[str]:
    try:
        over = yaml.safe_load((run_dir / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in over] if isinstance(over, list) else []


def sweep_states(sweep_dir: Path, query_slurm: bool = True, finished_tails: bool = True) -> List[JobState]:
    """Every job of a sweep directory, classified (`classify`)."""
    sweep_dir = Path(sweep_dir)
    submissions = read_submissions(sweep_dir)
    queue = slurm_queue() if query_slurm and submissions_or_slurm_runs(sweep_dir, submissions) else None
    return [
        classify(sweep_dir / name, name, over, submissions.get(name), queue, finished_tails)
        for name, over in expected_jobs(sweep_dir).items()
    ]


def submissions_or_slurm_runs(sweep_dir: Path, submissions: Dict[str, dict]) -> bool:
    """Ask SLURM only for sweeps that went through it (a local sweep stays fast and offline)."""
    if submissions:
        return True
    for status_path in Path(sweep_dir).glob("*/status.json"):
        status = read_status(status_path)
        if status and any(a.slurm for a in status.attempts):
            return True
    return False


def counts(states: List[JobState]) -> Dict[str, int]:
    out = {b: 0 for b in BUCKETS}
    for s in states:
        out[s.bucket] += 1
    return out
