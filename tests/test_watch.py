"""`ijr-status SWEEP_DIR --watch`: under a real pseudo-terminal the table is redrawn as a run advances (its step,
its ETA from the step rate) and the watch ends by itself when no job is running; without a terminal it prints a
line per refresh with the jobs that changed."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

from helpers import IJR_STATUS, cli
from synthetic_sweep import write_run  # noqa: E402

from ijr_cli.sweep import watch


def _sweep(tmp_path):
    sweep = tmp_path / "s"
    write_run(sweep / "done", {"optimizer.lr": 0.1}, [0, 1, 2])
    write_run(sweep / "going", {"optimizer.lr": 0.2}, [0, 1, 2, 3], status="RUNNING")
    status = json.loads((sweep / "going" / "status.json").read_text())
    status["total_steps"] = 100
    (sweep / "going" / "status.json").write_text(json.dumps(status))
    return sweep


def _advance(run, steps):
    with open(run / "metrics.jsonl", "a") as f:
        for step in steps:
            f.write(json.dumps({"step": step, "test_acc": 0.5, "sharpness": 3.0, "threshold": 10.0}) + "\n")


def _finish(run):
    status = json.loads((run / "status.json").read_text())
    status["status"] = "COMPLETED"
    (run / "status.json").write_text(json.dumps(status))


def test_watch_redraws_under_a_pseudo_terminal_and_stops_when_nothing_runs(tmp_path):
    sweep = _sweep(tmp_path)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [IJR_STATUS, str(sweep), "--watch", "0.3", "--no-slurm"], stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    seen, start, stage = b"", time.monotonic(), 0
    while time.monotonic() - start < 60:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                seen += os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
        if stage == 0 and seen.count(watch.CLEAR.encode()) >= 2:
            _advance(sweep / "going", [10, 20])
            stage = 1
        elif stage == 1 and b"step 20/100" in seen:
            time.sleep(0.4)
            _advance(sweep / "going", [30, 40])
            stage = 2
        elif stage == 2 and b"step 40/100" in seen:
            _finish(sweep / "going")
            stage = 3
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=30)
    os.close(leader)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0 and stage == 3, text[-2000:]
    screens = text.split(watch.CLEAR)
    assert len(screens) >= 4 and "RUNNING 1" in screens[1] and "COMPLETED 2" in screens[-1]
    assert "step 3/100" in screens[1] and "ETA " in text.split("step 40/100")[1].split("\n")[0]


def test_watch_without_a_terminal_prints_a_line_per_refresh_and_the_changes(tmp_path):
    sweep = _sweep(tmp_path)
    states = iter([None, "advance", "finish"])

    def poll():
        what = next(states)
        if what == "advance":
            _advance(sweep / "going", [50])
        elif what == "finish":
            _finish(sweep / "going")
        from ijr_cli.sweep import state

        return state.sweep_states(sweep, query_slurm=False)

    import io

    out = io.StringIO()
    clock = iter([0.0, 10.0, 20.0])
    last = watch.watch(sweep, 1.0, out, tty=False, poll=poll, clock=lambda: next(clock), sleep=lambda s: None)
    lines = out.getvalue().splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines if not ln.startswith("  ")] == [
        "completed 1 running 1 failed 0 diverged 0 missing 0",
        "completed 1 running 1 failed 0 diverged 0 missing 0",
        "completed 2 running 0 failed 0 diverged 0 missing 0",
    ]
    changed = [ln.strip() for ln in lines if ln.startswith("  ")]
    assert changed[:2] == [c for c in changed[:2] if "step" in c] and len(changed) == 4  # both, then going twice
    assert "step 50/100" in changed[2] and "ETA 11s" in changed[2]  # 47 steps in 10 s, 50 left: 10.6 s
    assert all(s.bucket == "COMPLETED" for s in last)


def test_watch_seconds_must_be_positive(tmp_path):
    proc = cli("ijr-status", [_sweep(tmp_path), "--watch", "0"])
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "ijr-status: error: --watch 0: give the seconds between refreshes, > 0"
    )
