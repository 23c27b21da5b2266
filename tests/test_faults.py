"""Faults a run directory must survive: two writers, a full or unwritable disk, a killed sweep (issue: hardening)."""

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import IJR_TRAIN, ROOT, TINY, run_cli
from helpers import IJR_REPORT, IJR_STATUS, IJR_SWEEP, can_mount_tmpfs

from ijr_cli.core.errors import RunDirectoryInUse
from ijr_cli.core.records import same_process_alive
from ijr_cli.run.lock import RunLock


@pytest.mark.slow  # (a subprocess run of several seconds: in make test-slow)
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


def _rows(path):
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def _wait_for(predicate, timeout=120.0, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


@pytest.mark.parametrize(
    "sig,launcher",
    [
        pytest.param(signal.SIGKILL, "local", marks=pytest.mark.slow),
        pytest.param(signal.SIGTERM, "local", marks=pytest.mark.slow),
        pytest.param(signal.SIGINT, "local", marks=pytest.mark.slow),  # Ctrl-C of ijr-sweep
        pytest.param(signal.SIGKILL, "local_parallel", marks=pytest.mark.slow),
    ],
    ids=["SIGKILL-local", "SIGTERM-local", "SIGINT-local", "SIGKILL-local_parallel"],
)
def test_a_killed_sweep_takes_its_jobs_with_it_and_resumes_from_their_checkpoints(tmp_path, sig, launcher):
    """kill -9 (or SIGTERM) of ijr-sweep: the running job stops at a step boundary with a checkpoint (STOPPED),
    no further job starts, ijr-status tells so, and the same command resumes the stopped job and runs the rest."""
    study = tmp_path / "three.yaml"
    fixed = [o for o in TINY if not o.startswith(("optimizer.lr=", "trainer."))]
    fixed += ["trainer.max_steps=10000", "trainer.eval_every=100", "trainer.checkpoint_every=5000"]
    fixed += ["trainer.progress=false"]
    study.write_text(
        "description: three jobs\nreference: test\n"
        f"fixed: {json.dumps(fixed)}\ngrids: [{{optimizer.lr: [0.01, 0.02, 0.03]}}]\nseeds: [0]\n"
    )
    sweep_dir = tmp_path / "sweep"
    cmd = [IJR_SWEEP, str(study), "--sweep-dir", str(sweep_dir), f"launcher={launcher}"]
    if launcher == "local_parallel":
        cmd += ["hydra.launcher.max_parallel=1", "trainer.num_threads=1"]
    sweep = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def running_job():
        for run in sweep_dir.glob("optimizer.lr=*"):
            if any(r.get("step", 0) >= 500 for r in _rows(run / "metrics.jsonl")):
                return run
        return None

    run = _wait_for(running_job)
    pid = json.loads((run / "status.json").read_text())["attempts"][-1]["pid"]
    sweep.send_signal(sig)
    sweep.wait(timeout=60)
    _wait_for(lambda: not same_process_alive(pid, None), timeout=60)  # the job did not outlive the sweep
    status = _wait_for(lambda: json.loads((run / "status.json").read_text()))
    assert status["status"] == "STOPPED" and (run / "checkpoint.pt").exists(), status
    time.sleep(3)  # nothing goes on in the background
    started = [d.name for d in sweep_dir.glob("optimizer.lr=*") if (d / "status.json").exists()]
    assert started == [run.name], started
    report = subprocess.run([IJR_STATUS, str(sweep_dir), "--no-slurm"], capture_output=True, text=True, cwd=ROOT)
    assert "stopped by signal SIGTERM at step" in report.stdout and "MISSING 2" in report.stdout, report.stdout
    line = next(ln for ln in report.stdout.splitlines() if "stopped by" in ln)
    assert line.split()[0] == "STOPPED" and " step " in line and "test_acc " in line, line
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "3 job(s): 3 to run (2 new, 1 to resume)" in again.stdout, again.stdout
    assert "ijr-train -m: job 1/3 " in again.stdout and "ijr-train -m: job 3/3 " in again.stdout  # with a sweep ETA
    assert "(2 done in " in again.stdout and "sweep ETA" in again.stdout
    final = json.loads((run / "status.json").read_text())
    assert final["status"] == "COMPLETED" and final["attempts"][-1]["resumed_from_step"] >= 500
    steps = [r["step"] for r in _rows(run / "metrics.jsonl")]
    assert steps == list(range(0, 10001, 100))


def test_ctrl_c_stops_a_run_at_a_step_boundary_with_a_checkpoint(tmp_path):
    """The first Ctrl-C (SIGINT) stops like SIGTERM: STOPPED, a checkpoint of that step, exit 130; resumable."""
    args = [*TINY, "trainer.max_steps=20000", "trainer.eval_every=100", "trainer.checkpoint_every=10000"]
    run = subprocess.Popen([IJR_TRAIN, *args, f"hydra.run.dir={tmp_path}"], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    _wait_for(lambda: any(r.get("step", 0) >= 300 for r in _rows(tmp_path / "metrics.jsonl")))
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    status = json.loads((tmp_path / "status.json").read_text())
    assert run.returncode == 130, err
    assert status["status"] == "STOPPED" and status["stop_reason"] == "Ctrl-C (SIGINT)", status
    assert (tmp_path / "checkpoint.pt").exists() and "stopping at the end of this step" in err


# ------------------------------------------------------------------------------------------ I/O failures
needs_tmpfs = pytest.mark.skipif(not can_mount_tmpfs(), reason="cannot mount a tmpfs here (unshare -rm)")


def _in_small_disk(tmp_path, size: str, script: str) -> subprocess.CompletedProcess:
    """Run `script` (sh) with DISK, a fresh tmpfs of `size`, mounted at tmp_path/disk in a private mount namespace;
    what the test inspects must be copied out of it into tmp_path/out by the script."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "out").mkdir()
    full = f"set -u\nmount -t tmpfs -o size={size} tmpfs {tmp_path / 'disk'}\nDISK={tmp_path / 'disk'}\n"
    full += f"OUT={tmp_path / 'out'}\n" + script
    return subprocess.run(["unshare", "-rm", "sh", "-c", full], capture_output=True, text=True, cwd=ROOT, timeout=300)


BIG_MODEL = [o for o in TINY if not o.startswith(("dataset.input_shape", "model.widths"))]
BIG_MODEL += ["dataset.input_shape=[100]", "model.widths=[3000]"]  # a checkpoint of about 2.5 MB


@needs_tmpfs
@pytest.mark.slow  # (a subprocess run of several seconds: in make test-slow)
def test_a_full_disk_fails_the_run_in_one_line_with_the_reason_recorded(tmp_path):
    script = f"""
{IJR_TRAIN} {" ".join(BIG_MODEL)} hydra.run.dir=$DISK/run > $OUT/stdout 2> $OUT/stderr
echo $? > $OUT/rc
ls -a $DISK/run > $OUT/listing
cp $DISK/run/status.json $OUT/
{IJR_STATUS} $DISK --no-slurm > $OUT/ijr-status
"""
    r = _in_small_disk(tmp_path, "2m", script)
    out = tmp_path / "out"
    assert r.returncode == 0, r.stderr
    stderr = (out / "stderr").read_text().strip().splitlines()
    assert (out / "rc").read_text().strip() == "1", stderr
    assert len(stderr) == 1 and stderr[0].startswith("ijr-train: error: disk full: cannot write "), stderr
    assert "checkpoint.pt (ENOSPC: No space left on device)" in stderr[0]
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == "FAILED" and status["error"].startswith("disk full: cannot write")
    listing = (out / "listing").read_text().split()
    assert not [f for f in listing if f.endswith(".tmp") or f == ".reserve"], listing  # nothing left behind
    assert "FAILED 1" in (out / "ijr-status").read_text() and "disk full" in (out / "ijr-status").read_text()


def test_a_run_directory_made_unwritable_mid_run_fails_in_one_line(tmp_path):
    """The directory refuses new files (chmod 555 mid-run): the checkpoint cannot be written; status.json, which
    still exists, is rewritten in place with the reason; exit 1. (Root ignores modes: then the run is nobody's.)"""
    prefix = []
    if os.geteuid() == 0:  # (pytest's tmp_path is private to root: the run goes in a folder nobody may enter)
        tmp_path = Path(tempfile.mkdtemp(prefix="ijr-unwritable-", dir="/tmp"))
        os.chmod(tmp_path, 0o777)
        prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    run_dir = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=20000", "trainer.eval_every=100", "trainer.checkpoint_every=2000"]
    run = subprocess.Popen(
        [*prefix, IJR_TRAIN, *args, f"hydra.run.dir={run_dir}"], stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    _wait_for(lambda: run.poll() is not None or any(r.get("step", 0) >= 500 for r in _rows(run_dir / "metrics.jsonl")))
    assert run.poll() is None, run.communicate()[1]
    os.chmod(run_dir, 0o555)
    try:
        _, err = run.communicate(timeout=120)
    finally:
        os.chmod(run_dir, 0o755)
    lines = err.strip().splitlines()
    assert run.returncode == 1 and len(lines) == 1, err
    assert "permission denied: cannot write" in lines[0] and "(EACCES: Permission denied)" in lines[0]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "FAILED" and "permission denied" in status["error"]
    assert not list(run_dir.glob("*.tmp"))
    if prefix:
        shutil.rmtree(tmp_path, ignore_errors=True)


@needs_tmpfs
def test_a_report_into_a_full_disk_leaves_the_previous_report(tmp_path):
    from synthetic_sweep import make_sweep

    sweep = tmp_path / "sweep"
    make_sweep(sweep, lrs=[0.01, 0.02], batches=[32, 64], seeds=[0], steps=50)
    script = f"""
{IJR_REPORT} {sweep} --out $DISK/report --no-slurm --no-figures 2> /dev/null
cp $DISK/report/report.json $OUT/before.json
avail=$(df --output=avail -B1 $DISK | tail -1)
head -c $((avail - 20000)) /dev/zero > $DISK/filler 2>/dev/null
{IJR_REPORT} {sweep} --out $DISK/report --no-slurm > $OUT/stdout 2> $OUT/stderr
echo $? > $OUT/rc
cp $DISK/report/report.json $OUT/after.json
ls -a $DISK > $OUT/listing
"""
    r = _in_small_disk(tmp_path, "8m", script)
    out = tmp_path / "out"
    assert r.returncode == 0, r.stderr
    assert (out / "rc").read_text().strip() == "1"
    errors = [ln for ln in (out / "stderr").read_text().splitlines() if "error" in ln]
    assert len(errors) == 1 and "disk full: cannot write" in errors[0] and "previous report" in errors[0], errors
    assert (out / "before.json").read_text() == (out / "after.json").read_text()  # the old report, intact
    assert sorted((out / "listing").read_text().split()) == [".", "..", "filler", "report"]


def test_a_repeated_job_error_is_printed_once_with_the_count():
    from ijr_cli.core.errors import JobFailure, failure_summary, report_failure

    failures = []
    lines = [report_failure(JobFailure([f"seed={i}"], "CUDA out of memory"), failures) for i in range(3)]
    lines.append(report_failure(JobFailure(["seed=9"], "another error"), failures))
    assert lines[0] == "ijr-train: job failed: seed=0: CUDA out of memory"
    assert lines[1:3] == [
        "ijr-train: job failed: seed=1: the same error as above (2 jobs so far)",
        "ijr-train: job failed: seed=2: the same error as above (3 jobs so far)",
    ]
    summary = failure_summary(failures)
    assert sum("CUDA out of memory" in ln for ln in summary) == 1 and "[3 jobs]" in summary[0]
    assert summary[3] == "ijr-train: job failed: seed=9: another error"


# ------------------------------------------------------------------------------------------ extending a run
EXTEND = [*TINY, "trainer.eval_every=100", "metrics.names=[sharpness,threshold]", "metrics.default_every=100"]


def _history(run_dir):
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in _rows(run_dir / "metrics.jsonl")]


@pytest.mark.slow  # (a subprocess run of several seconds: in make test-slow)
def test_a_completed_run_extended_to_more_steps_equals_the_longer_run(tmp_path):
    short, whole = tmp_path / "short", tmp_path / "whole"
    assert run_cli([*EXTEND, "trainer.max_steps=300", f"hydra.run.dir={short}"]).returncode == 0
    r = run_cli([*EXTEND, "trainer.max_steps=600", f"hydra.run.dir={short}"])
    assert r.returncode == 0, r.stderr
    assert run_cli([*EXTEND, "trainer.max_steps=600", f"hydra.run.dir={whole}"]).returncode == 0
    assert _history(short) == _history(whole)  # every row, every value, exactly
    status = json.loads((short / "status.json").read_text())
    assert status["status"] == "COMPLETED" and status["total_steps"] == 600 and status["extended_from_steps"] == 300
    assert status["attempts"][-1]["resumed_from_step"] == 300
    summary = json.loads((short / "summary.json").read_text())
    assert summary["steps"] == 600 and summary["train_loss"] == _history(whole)[-1]["train_loss"]
    assert "max_steps: 600" in (short / "config.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "change,message",
    [
        (["trainer.max_steps=200"], "already ran 300 steps; extending it needs more"),
        (["trainer.max_steps=600", "optimizer.lr=0.1"], "holds a run with a different config (differs in optimizer.lr"),
        (["trainer.max_steps=600", "metrics.default_every=200"], "holds a run with a different config"),
        (["trainer.max_steps=650", "+metrics.every.sharpness=200"], "holds a run with a different config"),
    ],
    ids=["shorter", "another-lr", "another-cadence", "cadence-and-length"],
)
def test_only_a_longer_length_extends_a_completed_run(tmp_path, change, message):
    run_dir = tmp_path / "run"
    assert run_cli([*EXTEND, "trainer.max_steps=300", f"hydra.run.dir={run_dir}"]).returncode == 0
    before = (run_dir / "metrics.jsonl").read_text()
    r = run_cli([*EXTEND, *change, f"hydra.run.dir={run_dir}"])
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert (run_dir / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_extension_refused_when_the_schedule_depends_on_the_length(tmp_path):
    run_dir = tmp_path / "run"
    base = [*EXTEND, "schedule=cosine"]
    assert run_cli([*base, "trainer.max_steps=300", f"hydra.run.dir={run_dir}"]).returncode == 0
    r = run_cli([*base, "trainer.max_steps=600", f"hydra.run.dir={run_dir}"])
    assert r.returncode == 2 and "schedule=cosine depends on the run's length" in r.stderr, r.stderr
    r = run_cli([*EXTEND, "trainer.max_steps=350", f"hydra.run.dir={tmp_path / 'odd'}"])
    r = run_cli([*EXTEND, "trainer.max_steps=700", f"hydra.run.dir={tmp_path / 'odd'}"])
    assert r.returncode == 2 and "its last step 350 is not a measurement step of the longer run" in r.stderr


# ------------------------------------------------------------------------------------------ naming and sharing
def test_status_and_report_of_a_sweep_that_exists_only_as_tiny_say_so(tmp_path):
    (tmp_path / "outputs" / "sweeps" / "eos_lr-tiny").mkdir(parents=True)
    for command, make in (("ijr-status", "make status"), ("ijr-report", "make report")):
        r = subprocess.run(
            [str(Path(IJR_TRAIN).with_name(command)), "outputs/sweeps/eos_lr"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
        )
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "only the --tiny version of this sweep exists here: outputs/sweeps/eos_lr-tiny" in r.stderr
        assert f"{make} SWEEP=eos_lr TINY=1" in r.stderr


@pytest.mark.slow
def test_report_and_multirun_directories_follow_the_umask(tmp_path):
    """Collaborators can read what ijr writes (umask 022: drwxr-xr-x), not only its owner."""
    sweep = tmp_path / "multi"
    previous = os.umask(0o022)  # (inherited by the commands)
    try:
        r = run_cli(["-m", *TINY, "trainer.max_steps=4", "metrics=none", "seed=0,1", f"hydra.sweep.dir={sweep}"])
        assert r.returncode == 0, r.stderr
        out = str(tmp_path / "report")
        report = subprocess.run(
            [IJR_REPORT, str(sweep), "--out", out, "--no-figures", "--no-slurm"], capture_output=True, text=True
        )
        assert report.returncode == 0, report.stderr
    finally:
        os.umask(previous)
    for d in (sweep, sweep / "seed=0", tmp_path / "report", tmp_path / "report" / "tables"):
        assert (d.stat().st_mode & 0o777) == 0o755, (d, oct(d.stat().st_mode))


def test_the_bad_input_catalogue_lists_every_case_the_tests_throw():
    """docs/bad-input.md is generated from the tests' cases (tests/bad_input_catalogue.py): none is missing."""
    from test_cli import BAD_INPUTS
    from test_data import BAD_NPZ

    page = (Path(ROOT) / "docs" / "bad-input.md").read_text()
    rows = {line.split("|")[1].strip() for line in page.splitlines() if line.startswith("| ")}
    missing = [case for case in [*BAD_INPUTS, *BAD_NPZ] if case not in rows]
    assert not missing, f"regenerate docs/bad-input.md (python tests/bad_input_catalogue.py): {missing}"
    assert "(not refused: a bug)" not in page
