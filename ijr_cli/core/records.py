"""The run directory: status, metrics history, summary, config copies, environment facts. No torch import.

Layout (the directory is Hydra's output dir):
  config.yaml      the resolved config          overrides.yaml   the command-line overrides
  status.json      RUNNING / COMPLETED / FAILED / DIVERGED / STOPPED, attempts, host, device, git, versions,
                   SLURM ids, error
  metrics.jsonl    one JSON object per logged step, flushed as written
  arrays.bin/.jsonl  the array-valued metrics and their index (`core.arrays`)
  summary.json     final metrics                checkpoint.pt    written by `train.state.save_checkpoint`
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

from ijr_cli.core.errors import StorageError

STATUSES = ("RUNNING", "COMPLETED", "FAILED", "DIVERGED", "STOPPED")  # STOPPED: by a signal, checkpointed
FINISHED = ("COMPLETED", "DIVERGED")
PACKAGES = ("ijr", "torch", "torchvision", "numpy", "hydra-core", "omegaconf", "submitit", "scikit-learn", "mnist1d")
SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_RESTART_COUNT",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
)


# Keys that may differ between a run's stored config and a resuming command (they do not change results).
RESUME_FREE_KEYS = ("trainer.progress",)
RESUME_FREE_PREFIXES = ("logger.",)  # the live loggers (a run may be resumed with others, or none)


def flatten(d, prefix="") -> Dict[str, Any]:
    """A nested config as {dotted key: value}."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(stored_yaml: str, new_yaml: str) -> List[str]:
    """The dotted keys whose values differ between two resolved configs (YAML text)."""
    import yaml

    a, b = flatten(yaml.safe_load(stored_yaml)), flatten(yaml.safe_load(new_yaml))
    return sorted(
        k
        for k in set(a) | set(b)
        if a.get(k) != b.get(k) and k not in RESUME_FREE_KEYS and not k.startswith(RESUME_FREE_PREFIXES)
    )


def config_conflict(config_path: Path, new_yaml: str, shown: int = 6) -> Optional[str]:
    """ "differs in a, b, ..." when the run in `config_path` has another config than `new_yaml`; else None."""
    if not Path(config_path).exists():
        return None
    diff = config_differences(Path(config_path).read_text(), new_yaml)
    if not diff:
        return None
    return "differs in " + ", ".join(diff[:shown]) + (" ..." if len(diff) > shown else "")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def json_safe(value: Any) -> Any:
    """Non-finite floats become null (JSON has no NaN); containers are converted recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@contextlib.contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """OSErrors of writing `path` as one StorageError (disk full, read-only, ...) naming it and the errno."""
    try:
        yield
    except OSError as e:
        raise StorageError(path, e) from None


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Any]:
    """`with atomic_file(path) as f:` writes into a temporary file beside `path` (binary), then fsyncs it and
    renames it over `path`: readers see the old file or the new one, never a part. On failure the temporary file is
    removed, the old file is untouched, and an OSError becomes a StorageError naming the path and the errno."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with storage_errors(path):
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """`data` into `path` through `atomic_file`."""
    with atomic_file(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def overwrite_in_place(path: Path, data: str) -> None:
    """Rewrite an existing file through its open handle: the last resort when its directory refuses new files
    (made unwritable mid-run), where `write_atomic`'s temporary file cannot be created. Not atomic."""
    with storage_errors(path):
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(data.encode())
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Optional[dict]:
    """The object in `path`, or None when the file is absent, empty or not valid JSON."""
    try:
        with open(path) as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else None
    except (OSError, ValueError):
        return None


def git_info(source_dir: Path) -> Dict[str, Any]:
    """Commit and dirty flag of the git work tree holding the ijr source, if it is one."""

    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(source_dir), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions(names: Iterable[str] = PACKAGES) -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def process_start_ticks(pid: int) -> Optional[int]:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22); None if unknown.

    With the pid it identifies a process even after the pid has been reused.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def same_process_alive(pid: int, start_ticks: Optional[int]) -> bool:
    """Is process `pid` running and (when `start_ticks` is known) the one that started then, not a later process
    that reuses the pid?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start_ticks is None or process_start_ticks(pid) == start_ticks


def slurm_ids() -> Dict[str, str]:
    return {k: os.environ[k] for k in SLURM_VARS if k in os.environ}


class MetricsLog:
    """Append-only JSON-lines history; each row is flushed as it is written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None

    def open(self) -> "MetricsLog":
        with storage_errors(self.path):
            self._file = open(self.path, "a", buffering=1)
        return self

    def write(self, row: Dict[str, Any]) -> None:
        with storage_errors(self.path):
            self._file.write(json.dumps(json_safe(row)) + "\n")
            self._file.flush()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with contextlib.suppress(OSError):  # (a row that could not be flushed was reported by `write`)
                file.close()

    def truncate_after(self, step: int) -> None:
        """Keep rows with step <= `step` (rows written after the last checkpoint are redone on resume);
        a torn last line from a killed process is dropped."""
        kept: List[str] = []
        for row in read_rows(self.path):
            if row.get("step", math.inf) <= step:
                kept.append(json.dumps(row))
        write_atomic(self.path, "".join(line + "\n" for line in kept))


def read_rows(path: Path) -> List[Dict[str, Any]]:
    """Rows of a metrics.jsonl; unparsable lines (a torn write) are skipped."""
    return read_rows_counted(path)[0]


def read_rows_counted(path: Path) -> Tuple[List[Dict[str, Any]], int]:
    """Rows of a metrics.jsonl and the number of non-empty lines that were not a JSON object (skipped)."""
    rows: List[Dict[str, Any]] = []
    bad = 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:
                    bad += bool(line.strip())
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
                else:
                    bad += 1
    except FileNotFoundError:
        pass
    return rows, bad


class RunDirectory:
    """Paths and file operations of one run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.status_path = self.path / "status.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.config_path = self.path / "config.yaml"
        self.overrides_path = self.path / "overrides.yaml"
        self.checkpoint_path = self.path / "checkpoint.pt"

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.summary_path, summary)

    def read_summary(self) -> Optional[dict]:
        return read_json(self.summary_path)
