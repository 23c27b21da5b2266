"""Bad input (one line on stderr, exit code 2), a stop by a signal, and the failures of a multirun's jobs."""

import difflib
import errno
from dataclasses import dataclass
from typing import Dict, Iterable, List


class UserError(Exception):
    """A problem with what the user asked for (a config value, a missing file), stated with its fix."""

    exit_code = 2


class RunDirectoryInUse(UserError):
    """Another process holds the run directory: refused, and the directory is left exactly as it is."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """ " (did you mean X?)" for the closest candidate (difflib's ratio >= 0.6), or "" when none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class StorageError(Exception):
    """A write that the filesystem refused (disk full, quota, read-only, permission): one line naming the path and
    the errno, exit code 1; the run is marked FAILED with the reason and resumes once the cause is fixed."""

    exit_code = 1
    REASONS = {
        errno.ENOSPC: "disk full",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only filesystem",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EIO: "I/O error",
    }

    def __init__(self, path, error: OSError):
        self.path, self.errno = str(path), error.errno
        self.reason = self.REASONS.get(error.errno, "cannot write")
        code = errno.errorcode.get(error.errno, str(error.errno))
        super().__init__(f"{self.reason}: cannot write {self.path} ({code}: {error.strerror or error})")


class Terminated(BaseException):
    """A signal stopped training (SIGTERM, or SLURM's SIGUSR2): the run is marked STOPPED (FAILED when it could
    not stop at a step boundary) and resumes from its last checkpoint.

    A BaseException (like KeyboardInterrupt) so that no `except Exception` on the way swallows it.
    """

    exit_code = 143

    def __init__(self, message: str = "terminated", exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code  # 130 for Ctrl-C, 143 for SIGTERM


@dataclass
class JobFailure:
    """A multirun job that failed (bad input or a crash): what its task returns to the launcher, and what the
    multirun lists when it ends (exit code 1) while the other jobs run on."""

    overrides: List[str]
    message: str

    def line(self) -> str:
        return f"ijr-train: job failed: {' '.join(self.overrides)}: {self.message}"

    def short_line(self, times: int) -> str:
        """The line of a failure whose message was printed before: the overrides and the count only."""
        return f"ijr-train: job failed: {' '.join(self.overrides)}: the same error as above ({times} jobs so far)"


def report_failure(failure: JobFailure, failures: List[JobFailure]) -> str:
    """Add a job's failure to `failures`; returns the line to print: in full the first time its message is
    seen, as a short line with the count after that (a sweep where every job hits one error prints it once)."""
    times = sum(f.message == failure.message for f in failures) + 1
    failures.append(failure)
    return failure.line() if times == 1 else failure.short_line(times)


def failure_summary(failures: List[JobFailure]) -> List[str]:
    """The end-of-multirun list: each distinct message in full once (with how many jobs had it), then the jobs
    that repeated it by their overrides."""
    counts: Dict[str, int] = {}
    for f in failures:
        counts[f.message] = counts.get(f.message, 0) + 1
    lines, shown = [], set()
    for f in failures:
        if f.message in shown:
            lines.append(f"ijr-train: job failed: {' '.join(f.overrides)}: the same error")
            continue
        shown.add(f.message)
        n = counts[f.message]
        lines.append(f.line() + (f" [{n} jobs]" if n > 1 else ""))
    return lines


# This process's failed multirun jobs, in the order they ended: the basic launcher's jobs run in this process and
# add themselves; the local_parallel launcher adds those its submitit jobs return (or that died).
FAILED_JOBS: List[JobFailure] = []
