"""Faults a run directory must survive: two writers, a full or unwritable disk, a killed sweep (issue: hardening)."""

import errno
import fcntl
import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import IJR_TRAIN, ROOT, TINY, run_cli

from ijr_cli.core.errors import RunDirectoryInUse
from ijr_cli.run.lock import RunLock


def test_a_held_run_directory_is_refused_naming_the_holder_and_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):
        r = run_cli([*TINY, f"hydra.run.dir={run_dir}"])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"is in use by process {os.getpid()} on host {socket.gethostname()}" in lines[0]
    assert (run_dir / ".lock").exists() and not (run_dir / "status.json").exists()  # the holder's, untouched
    r = run_cli([*TINY, f"hydra.run.dir={run_dir}"])  # the holder has gone: the run goes ahead
    assert r.returncode == 0, r.stderr


def test_the_lock_is_exclusive_between_processes_and_dropped_when_its_holder_dies(tmp_path):
    holder = subprocess.Popen(
        [
            "python",
            "-c",
            f"from ijr_cli.run.lock import RunLock; l = RunLock({str(tmp_path)!r}); l.acquire(); "
            "print('held', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PATH": str(Path(IJR_TRAIN).parent) + os.pathsep + os.environ["PATH"]},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryInUse, match=f"process {holder.pid} on host"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no chance to clean up; the kernel drops the flock
        holder.wait()
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid() and lock.supported


def test_without_flock_support_the_status_record_guards_the_run(tmp_path, monkeypatch, capsys):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with RunLock(tmp_path) as lock:
        assert not lock.supported
    assert "does not support flock (No locks available)" in capsys.readouterr().err


def test_two_processes_started_at_once_into_one_run_directory_one_writes(tmp_path):
    """Both started at the same instant: one runs to COMPLETED with every row once, the other exits 2 naming it."""
    run_dir = tmp_path / "run"
    args = [IJR_TRAIN, *TINY, "trainer.max_steps=400", f"hydra.run.dir={run_dir}"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for _ in "ab"]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [(p.returncode, e) for p, (o, e) in zip(procs, outs)]
    loser = next(e for p, (o, e) in zip(procs, outs) if p.returncode == 2)
    assert "is in use by" in loser and len(loser.strip().splitlines()) == 1, loser
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(0, 401, 10))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "COMPLETED"
