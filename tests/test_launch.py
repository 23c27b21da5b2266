"""Launching without a cluster: the job-list sweeper, the local_parallel launcher, ijr-sweep's checks before a
launch, launch directories that never collide, and the hand-over of SLURM's SIGUSR2 to submitit's handler."""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import IJR_TRAIN, ROOT, TINY, run_cli
from helpers import cli


def _sweep(args, env=None, timeout=600):
    return cli("ijr-sweep", args, env=env, timeout=timeout)


def test_two_multiruns_started_together_never_share_a_directory(tmp_path):
    args = [IJR_TRAIN, "-m", *TINY, "trainer.max_steps=2", "metrics=none", "seed=0,1"]
    procs = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    assert all(p.wait(120) == 0 for p in procs), [p.stderr.read() for p in procs]
    dirs = sorted((tmp_path / "outputs" / "multirun").iterdir())
    assert len(dirs) == 2  # one per launch, each with both of its jobs
    assert all(sorted(p.name for p in d.iterdir() if p.is_dir()) == ["seed=0", "seed=1"] for d in dirs)


def test_the_job_list_sweeper_runs_exactly_the_listed_jobs(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("- [seed=3, optimizer.lr=0.1]\n- [seed=4, optimizer.lr=0.02]\n")
    common = [o for o in TINY if not o.startswith("optimizer.lr=")]
    r = run_cli(
        [
            "-m",
            *common,
            "trainer.max_steps=2",
            "metrics=none",
            "hydra/sweeper=ijr_jobs",
            f"hydra.sweeper.jobs_file={jobs}",
            f"hydra.sweep.dir={tmp_path / 's'}",
            "hydra.sweep.subdir=${hydra.job.override_dirname}",
            "hydra.job.config.override_dirname.exclude_keys=["
            + ",".join(o.split("=")[0] for o in common + ["trainer.max_steps", "metrics"])
            + "]",
        ]
    )
    assert r.returncode == 0, r.stderr
    names = ["optimizer.lr=0.02,seed=4", "optimizer.lr=0.1,seed=3"]
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == names
    for name, lr in zip(names, (0.02, 0.1)):  # the job's own value wins over the common one
        assert f"lr: {lr}" in (tmp_path / "s" / name / "config.yaml").read_text()


def test_named_jobs_run_in_the_directory_the_list_names(tmp_path):
    """ijr-sweep's jobs file names each job's run directory (`job_directory_name`); the sweeper hands the name to
    Hydra as that job's hydra.sweep.subdir, commas, '=' and brackets included."""
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "- {name: 'optimizer.lr=0.1,seed=3', overrides: [seed=3, optimizer.lr=0.1]}\n"
        "- {name: 'regularizer=[mixup,none],seed=4', overrides: [seed=4, 'regularizer=[mixup,none]']}\n"
    )
    common = [o for o in TINY if not o.startswith("optimizer.lr=")]
    r = run_cli(
        [
            "-m",
            *common,
            "trainer.max_steps=2",
            "metrics=none",
            "hydra/sweeper=ijr_jobs",
            f"hydra.sweeper.jobs_file={jobs}",
            f"hydra.sweep.dir={tmp_path / 's'}",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == [
        "optimizer.lr=0.1,seed=3",
        "regularizer=[mixup,none],seed=4",
    ]
    assert "lr: 0.1" in (tmp_path / "s" / "optimizer.lr=0.1,seed=3" / "config.yaml").read_text()
    overrides = (tmp_path / "s" / "optimizer.lr=0.1,seed=3" / "overrides.yaml").read_text()
    assert "seed=3" in overrides and "hydra.sweep.subdir" not in overrides  # the run's own overrides only


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "needs hydra.sweeper.jobs_file"),
        (["hydra.sweeper.jobs_file=JOBS", "seed=0,1"], "may not sweep too (seed=0,1)"),
        (["hydra.sweeper.jobs_file=NOFILE"], "cannot read hydra.sweeper.jobs_file"),
        (["hydra.sweeper.jobs_file=BAD"], "must be a non-empty YAML list of lists"),
    ],
)
def test_the_job_list_sweeper_refuses_bad_input_in_one_line(tmp_path, extra, message):
    (tmp_path / "jobs.yaml").write_text("- [seed=0]\n")
    (tmp_path / "bad.yaml").write_text("seed: 0\n")
    extra = [
        e.replace("JOBS", str(tmp_path / "jobs.yaml"))
        .replace("NOFILE", str(tmp_path / "no.yaml"))
        .replace("BAD", str(tmp_path / "bad.yaml"))
        for e in extra
    ]
    r = run_cli(["-m", *TINY, "hydra/sweeper=ijr_jobs", f"hydra.sweep.dir={tmp_path / 's'}", *extra])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and message in err[0], r.stderr


@pytest.mark.slow  # (48 s: make test was 12 min after issue 15; test-slow runs it)
def test_local_parallel_runs_a_tiny_sweep_two_at_a_time(tmp_path):
    sweep_dir = tmp_path / "eos"
    r = _sweep(
        [
            "eos_lr",
            "--tiny",
            "--sweep-dir",
            sweep_dir,
            "launcher=local_parallel",
            "trainer.num_threads=1",
            "hydra.launcher.max_parallel=2",
            "hydra.launcher.gpus=[]",
            "trainer.max_steps=150",  # training long enough (~5 s) that start-up jitter cannot hide the overlap
        ]
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "launcher local_parallel: 2 job(s) at a time" in r.stdout
    assert "COMPLETED 4  RUNNING 0  FAILED 0  DIVERGED 0  MISSING 0" in r.stdout
    spans = []
    for d in sweep_dir.glob("optimizer.lr=*"):
        attempt = json.loads((d / "status.json").read_text())["attempts"][0]
        spans.append((_dt.datetime.fromisoformat(attempt["started"]), _dt.datetime.fromisoformat(attempt["ended"])))
    assert len(spans) == 4
    assert _most_at_once(spans) == 2  # never more than max_parallel at a time, and two did run together
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 4  # each job ran as a submitit job


def _most_at_once(spans) -> int:
    """The largest number of (start, end) spans that overlap (an end before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_most_at_once_counts_overlaps():
    t = [_dt.datetime(2026, 1, 1, 0, 0, s) for s in range(6)]
    assert _most_at_once([(t[0], t[2]), (t[1], t[3]), (t[3], t[4])]) == 2
    assert _most_at_once([(t[0], t[1]), (t[1], t[2])]) == 1
    assert _most_at_once([(t[0], t[5]), (t[1], t[4]), (t[2], t[3])]) == 3


def test_local_parallel_lists_failed_jobs_and_exits_1_like_the_basic_launcher(tmp_path):
    r = run_cli(
        [
            "-m",
            *TINY,
            "trainer.max_steps=2",
            "metrics=none",
            "launcher=local_parallel",
            "hydra.launcher.gpus=[]",
            "trainer.num_threads=1",
            "optimizer.batch_size=32,5000",
            f"hydra.sweep.dir={tmp_path}",
        ]
    )
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    summary = r.stderr[r.stderr.index("1 job(s) of the multirun failed") :]
    failed = [line for line in summary.splitlines() if "job failed:" in line]
    assert len(failed) == 1 and "optimizer.batch_size=5000 " in failed[0], r.stderr
    assert failed[0].endswith(
        "optimizer.batch_size=5000 is larger than the 256 training examples; use at most 256 or null for full batch"
    )
    statuses = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json"))
    assert statuses == ["COMPLETED", "FAILED"]


@pytest.mark.slow  # (a subprocess run of several seconds: in make test-slow)
def test_a_launch_refuses_a_run_directory_that_holds_another_config(tmp_path):
    sweep_dir = tmp_path / "eos"
    r = _sweep(["eos_lr", "--tiny", "--sweep-dir", sweep_dir, "seed=0", "optimizer.lr=0.1"])
    assert r.returncode == 0, r.stderr
    r = _sweep(["eos_lr", "--tiny", "--sweep-dir", sweep_dir, "seed=0", "optimizer.lr=0.1", "trainer.max_steps=31"])
    err = r.stderr.strip().splitlines()
    assert (
        r.returncode == 2
        and len(err) == 1
        and "holds a run with a different config (differs in trainer.max_steps)" in err[0]
        and "--sweep-dir" in err[0]
    ), r.stderr


def test_slurm_dry_run_shows_each_jobs_resources_from_env_site_file_and_command_line(tmp_path):
    site = ROOT / "conf" / "local" / "slurm.yaml"
    if site.exists():
        pytest.skip(f"{site} exists (a real site configuration); not overwriting it")
    site.write_text("# @package _global_\nhydra:\n  launcher:\n    account: lab-from-file\n    qos: q-file\n")
    try:
        r = _sweep(
            [
                "eos_lr",
                "--tiny",
                "--dry-run",
                "--sweep-dir",
                tmp_path / "s",
                "launcher=slurm",
                "hydra.launcher.qos=q-cli",
            ],
            env={"IJR_SLURM_PARTITION": "gpu-env", "IJR_SLURM_CPUS_PER_TASK": "3", "IJR_SLURM_ACCOUNT": "lab-env"},
        )
    finally:
        site.unlink()
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "launcher slurm" in ln)
    for shown in (
        "partition=gpu-env",
        "account=lab-from-file",
        "qos=q-cli",
        "cpus_per_task=3",
        "gpus_per_node=1",
        "signal_delay_s=120",
        "max_num_timeout=10",
    ):
        assert shown in line, line
    plain = _sweep(["eos_lr", "--tiny", "--dry-run", "--sweep-dir", tmp_path / "s"])
    listed = [ln.split()[-1] for ln in r.stdout.splitlines() if ln.strip().startswith("run ")]
    assert len(listed) == 4 and listed == [
        ln.split()[-1] for ln in plain.stdout.splitlines() if ln.strip().startswith("run ")
    ]  # the launcher is not identity
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "launch,message",
    [
        (
            ["launcher=nosuch"],
            "Could not find 'launcher/nosuch': Available options in 'launcher': local, local_parallel, slurm",
        ),
        (["hydra.launcher.partition=gpu"], "hydra.launcher.partition is not a setting of launcher=local"),
        (["launcher=slurm", "hydra.launcher.cpus_per_task=abc"], "hydra.launcher.cpus_per_task=abc"),
    ],
)
def test_a_bad_launcher_choice_or_setting_is_one_line_and_exit_2(tmp_path, launch, message):
    r = _sweep(["eos_lr", "--tiny", "--dry-run", "--sweep-dir", tmp_path / "s", *launch])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "launcher settings: " in err[0] and message in err[0], r.stderr


def test_a_sweep_dir_that_is_a_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "afile").write_text("")
    for extra in ([], ["--dry-run"]):
        r = _sweep(["eos_lr", "--tiny", "--sweep-dir", tmp_path / "afile", *extra])
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and "is a file, not a directory" in err[0], r.stderr
    r = _sweep(["eos_lr", "--tiny", "--sweep-dir", tmp_path / "afile" / "sub"])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and "is not a writable directory" in err[0], r.stderr


def test_slurm_launch_without_sbatch_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from ijr_cli.cli import sweep as sweep_cli

    monkeypatch.setattr(sweep_cli.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exc:
        sweep_cli.sweep(["eos_lr", "--tiny", "--sweep-dir", str(tmp_path / "s"), "launcher=slurm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "launcher=slurm needs SLURM's sbatch on PATH" in err[0]
    assert not (tmp_path / "s").exists()


HANDOVER = r"""
import json, signal, sys
from pathlib import Path
run_dir = Path(sys.argv[1])
def previous(signum, frame):  # stands in for submitit's checkpoint-and-requeue handler
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir.parent / "handover.json").write_text(json.dumps({"status": status["status"], "signum": signum}))
    sys.exit(42)
signal.signal(signal.SIGUSR2, previous)
sys.argv = ["ijr-train", *sys.argv[2:], f"hydra.run.dir={run_dir}"]
from ijr_cli.cli.train import train
train()
"""


@pytest.mark.slow  # (a subprocess run of several seconds: in make test-slow)
def test_sigusr2_stops_at_a_step_with_its_checkpoint_then_hands_over_to_the_previous_handler(tmp_path):
    args = [*TINY, "trainer.max_steps=3000", "trainer.eval_every=50", "trainer.checkpoint_every=100"]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", HANDOVER, str(run_dir), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGUSR2)
    assert proc.wait(60) == 42, proc.stderr.read()
    handover = json.loads((tmp_path / "handover.json").read_text())
    assert handover == {"status": "STOPPED", "signum": int(signal.SIGUSR2)}  # called after the stop was recorded
    status = json.loads((run_dir / "status.json").read_text())
    at = status["attempts"][0]["stopped_at_step"]
    assert status["error"] == f"stopped by signal SIGUSR2 (time limit or preemption) at step {at} (checkpoint saved)"
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == at
    r = run_cli([*args, f"hydra.run.dir={run_dir}"])
    assert r.returncode == 0, r.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "COMPLETED" and status["attempts"][1]["resumed_from_step"] == at
