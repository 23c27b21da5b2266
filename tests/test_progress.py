"""Progress where people look: one line per evaluation without a TTY (stdout and the run's log), a bar on one."""

import fcntl
import os
import pty
import struct
import subprocess
import termios
import time

from conftest import IJR_TRAIN, ROOT, TINY, run_cli

from ijr_cli.train.progress import Progress, row_line

QUIET_OFF = [o for o in TINY if not o.startswith("trainer.progress")]


def test_without_a_tty_each_evaluation_prints_one_flushed_line_and_logs_it(tmp_path):
    r = run_cli([*QUIET_OFF, "metrics=eos", f"hydra.run.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("ijr-train: step ")]
    assert [ln.split()[2] for ln in lines] == ["0/40", "10/40", "20/40", "30/40", "40/40"], r.stdout
    assert "ETA" in lines[1] and "train loss" in lines[1] and "test loss" in lines[1] and "lr 0.05" in lines[1]
    assert "sharpness" in lines[0] and "/ 2/η 40" in lines[0]  # metrics=eos measures both at step 0
    log = (tmp_path / "ijr-train.log").read_text()
    assert "\r" not in log and log.count(" step ") == 5 and "step 40/40 (100%)" in log
    assert "\r" not in r.stderr  # no bar without a terminal


def test_on_a_terminal_the_bar_shows_test_accuracy_and_sharpness_against_the_threshold(tmp_path):
    primary, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))  # a 250-column terminal
    proc = subprocess.Popen(
        [IJR_TRAIN, *QUIET_OFF, "metrics=eos", "metrics.default_every=10", f"hydra.run.dir={tmp_path}"],
        stdout=subprocess.PIPE,
        stderr=replica,
        cwd=ROOT,
        text=True,
    )
    os.close(replica)
    out = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(primary)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "40/40" in text and "test_acc=" in text and "S/2η=" in text and "/40" in text.split("S/2η=")[-1], text
    assert "ijr-train: step " not in proc.stdout.read()  # the lines are for logs and pipes; the terminal has the bar
    assert "\r" not in (tmp_path / "ijr-train.log").read_text()


def test_the_eta_counts_evaluation_time():
    """The ETA is the attempt's average time per step (evaluations and measurements included) times the steps
    left: 10 steps in 1 s of which 0.9 s evaluating leave 90 steps = 9 s, not the 0.9 s of the steps alone."""
    p = Progress(total=100, initial=0, bar=False)
    p.started = time.perf_counter() - 1.0
    line = row_line({"step": 10, "lr": 0.1}, 100, 1.0, 9.0)
    assert "ETA 9s" in line and "elapsed 1s" in line
    p.row({"step": 10, "lr": 0.1})  # (no bar, no lines: nothing printed)
    assert p._bar is None
