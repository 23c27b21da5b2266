"""Opening a run directory: may this command use it (same config, no live owner), and what it holds."""

from __future__ import annotations

import os
import socket
from typing import Optional

from ijr_cli.core import records
from ijr_cli.core.errors import UserError


def check_run_directory(rd: records.RunDirectory, config_yaml: str) -> Optional[dict]:
    """The stored status of a run to resume (None for a new run); UserError when the directory can't be used."""
    status = rd.read_status()
    if rd.status_path.exists() and status is None:
        raise UserError(f"{rd.status_path} is unreadable; move the run directory away or choose another hydra.run.dir")
    conflict = records.config_conflict(rd.config_path, config_yaml)
    if conflict:
        raise UserError(
            f"run directory {rd.path} holds a run with a different config ({conflict}); "
            f"use the same overrides to resume, or another hydra.run.dir"
        )
    if status and status.get("status") == "RUNNING":
        last = (status.get("attempts") or [{}])[-1]
        if (
            last.get("host") == socket.gethostname()
            and last.get("pid") not in (None, os.getpid())
            and records.same_process_alive(int(last["pid"]), last.get("pid_start_ticks"))
        ):
            raise UserError(
                f"run directory {rd.path} is in use by process {last['pid']} on this host; wait for it or stop it"
            )
    return status
