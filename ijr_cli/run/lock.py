"""One writer per run directory: an exclusive `flock` on RUN_DIR/.lock, held for the whole run.

Two `ijr-train` processes pointed at one directory (the same command started twice, a requeued SLURM job
overlapping its predecessor) would both write metrics.jsonl and status.json; the second to ask for the lock exits 2
naming the holder (its pid, host and start time, written into the lock file). The kernel drops the lock when its
holder dies, kill -9 included, so a killed run stays resumable with no stale lock to remove.

Where flock is not supported (some cluster filesystems answer ENOLCK or EOPNOTSUPP) ijr says so once on stderr and
falls back to the record in status.json (the last attempt's pid, host and process start time), which refuses a
second process on the same host while the first is alive. flock on NFS (Linux emulates it with byte-range locks)
and on Lustre mounted with `-o flock` is exclusive across nodes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path
from typing import Optional

from ijr_cli.core import records
from ijr_cli.core.errors import RunDirectoryInUse, UserError

LOCK_NAME = ".lock"
# errors that mean "this filesystem cannot flock", not "someone holds it"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLock:
    """`with RunLock(run_dir):` holds the directory's lock, or raises a UserError naming its holder."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: Optional[int] = None
        self.supported = True

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(
                f"cannot create the run directory's lock {self.path} ({e.strerror}); choose a writable hydra.run.dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunDirectoryInUse(
                f"run directory {self.path.parent} is in use by {holder}; wait for it to end or stop it "
                f"(one process writes a run directory at a time)"
            ) from None
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                os.close(fd)
                raise
            os.close(fd)
            self.supported = False
            print(
                f"ijr-train: warning: this filesystem does not support flock ({e.strerror}) on {self.path}; only the "
                f"pid+host record in status.json guards the run directory against a second writer",
                file=sys.stderr,
                flush=True,
            )
            return
        self.fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": records.now_iso()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # (closing drops the flock; the file stays, holding the last holder's record)
            self.fd = None


def _read_holder(fd: int) -> str:
    """`process PID on host HOST (since TIME)` from the lock file, or `another process` while it is being written."""
    try:
        raw = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"process {raw['pid']} on host {raw['host']} (since {raw['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
