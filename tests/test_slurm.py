"""Sweeps on a real one-node SLURM (the `slurm_cluster` fixture: Debian's slurm-wlm started by the tests).

What is checked: `make sweep ... LAUNCHER=slurm` returns once the jobs are queued and they complete; a second
`make sweep` submits nothing; a failing job is reported with its overrides while the others finish; a running
job requeued with `scontrol requeue` stops at a step with a checkpoint and its requeued run resumes there and
ends with exactly the metrics of an uninterrupted run; a job reaching its time limit gets SIGUSR2, checkpoints,
is requeued by submitit and resumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IJR_TRAIN, ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.system, pytest.mark.timeout(600)]

from helpers import IJR_STATUS, IJR_SWEEP  # noqa: E402

# the site settings of this test cluster, given the way a user gives them (environment variables)
SITE = {
    "IJR_SLURM_PARTITION": "debug",
    "IJR_SLURM_GPUS_PER_NODE": "null",
    "IJR_SLURM_CPUS_PER_TASK": "1",
    "IJR_SLURM_MEM_GB": "null",
    "IJR_SLURM_TIMEOUT_MIN": "10",
}
# ~10 ms per full-batch GD step of fc-tanh on digits with one thread: LONG takes ~20 s of training
LONG = [
    "metrics=none",
    "trainer.eval_every=100",
    "trainer.checkpoint_every=100",
    "trainer.num_threads=1",
    "trainer.progress=false",
    "optimizer.lr=0.1",
    "seed=0",
]


def _env(cluster):
    return {**os.environ, **cluster.env, **SITE}


def _study(tmp_path, name, fixed, grids):
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"description": name, "fixed": fixed, "grids": grids, "seeds": [0]}))
    return path


def _sweep(cluster, *args, timeout=120):
    r = subprocess.run(
        [IJR_SWEEP, *map(str, args), "launcher=slurm"],
        cwd=ROOT,
        env=_env(cluster),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r


def _status(cluster, sweep_dir):
    r = subprocess.run(
        [IJR_STATUS, str(sweep_dir), "--json"], env=_env(cluster), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _wait(what, predicate, timeout, explain=None):
    """Poll `predicate` until it is truthy; on timeout, fail with `explain()` (the cluster's and the run's state)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\n{explain()}" if explain else ""))


def _run_status(run_dir):
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def _rows(path):
    return [
        {k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
        for line in Path(path).read_text().splitlines()
    ]


def test_make_sweep_on_slurm_returns_when_queued_completes_and_a_rerun_submits_nothing(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "eos"
    make = [
        "make",
        "--no-print-directory",
        "sweep",
        f"VENV={sys.prefix}",
        "SWEEP=eos_lr",
        "TINY=1",
        "LAUNCHER=slurm",
        f"ARGS=--sweep-dir {sweep_dir} trainer.num_threads=1",
    ]
    r = subprocess.run(make, cwd=ROOT, env=_env(slurm_cluster), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "4 job(s) queued on SLURM" in r.stdout and f"ijr-status {sweep_dir}" in r.stdout
    first = _status(slurm_cluster, sweep_dir)
    assert first["counts"]["COMPLETED"] < 4  # make returned before the jobs finished: it did not wait
    assert first["counts"]["RUNNING"] + first["counts"]["COMPLETED"] == 4
    done = _wait(
        "4 COMPLETED jobs", lambda: (s := _status(slurm_cluster, sweep_dir))["counts"]["COMPLETED"] == 4 and s, 300
    )
    assert {j["name"] for j in done["jobs"]} == {f"optimizer.lr={lr},seed=0" for lr in ("0.05", "0.1", "0.2", "0.4")}
    for job in done["jobs"]:
        attempts = _run_status(sweep_dir / job["name"])["attempts"]
        assert len(attempts) == 1 and attempts[0]["slurm"]["SLURM_JOB_ID"]
    jobs_before = slurm_cluster.job_ids()
    ledger = (sweep_dir / "submissions.jsonl").read_text()
    r = subprocess.run(make, cwd=ROOT, env=_env(slurm_cluster), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "nothing to launch" in r.stdout and "skipped: 4 COMPLETED" in r.stdout
    assert (
        sorted(slurm_cluster.job_ids()) == sorted(jobs_before)
        and (sweep_dir / "submissions.jsonl").read_text() == ledger
    )


def test_a_packed_sweep_is_one_array_task_per_pack_and_its_members_are_ordinary_runs(slurm_cluster, tmp_path):
    """make sweep PACK=2 on SLURM: 4 jobs in 2 packs are 2 array tasks; while queued, ijr-status counts the 4 members
    (from the submissions ledger), and each member ends COMPLETED in its own run directory with its pack record."""
    sweep_dir = tmp_path / "eos"
    make = ["make", "--no-print-directory", "sweep", f"VENV={sys.prefix}", "SWEEP=eos_lr", "TINY=1", "PACK=2"]
    make += ["LAUNCHER=slurm", f"ARGS=--sweep-dir {sweep_dir} trainer.num_threads=1"]
    r = subprocess.run(make, cwd=ROOT, env=_env(slurm_cluster), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert (
        "packs: 2 pack(s) of 4 job(s)" in r.stdout and "4 job(s) queued on SLURM as 2 array task(s) (packs)" in r.stdout
    )
    ledger = [json.loads(line) for line in (sweep_dir / "submissions.jsonl").read_text().splitlines()]
    assert len(ledger) == 4 and len({e["job_id"] for e in ledger}) == 2
    first = _status(slurm_cluster, sweep_dir)
    assert first["counts"]["RUNNING"] + first["counts"]["COMPLETED"] == 4
    done = _wait(
        "4 COMPLETED jobs", lambda: (s := _status(slurm_cluster, sweep_dir))["counts"]["COMPLETED"] == 4 and s, 300
    )
    slots = set()
    for job in done["jobs"]:
        status = _run_status(sweep_dir / job["name"])
        assert status["attempts"][0]["slurm"]["SLURM_JOB_ID"] and status["pack"]["size"] == 2
        slots.add((status["pack"]["name"], status["pack"]["slot"]))
    assert slots == {("pack-0000", 0), ("pack-0000", 1), ("pack-0001", 0), ("pack-0001", 1)}


def test_a_failing_job_is_reported_with_its_overrides_and_the_others_finish(slurm_cluster, tmp_path):
    # an npz dataset's size is known only once it is read, so the pre-flight lets batch 5000 through: it fails in
    # its SLURM job (on digits, whose size is known, ijr-sweep would refuse it before submitting anything)
    rng = np.random.default_rng(0)
    data = tmp_path / "small.npz"
    np.savez(
        data,
        x_train=rng.normal(size=(128, 10)).astype(np.float32),
        y_train=rng.integers(0, 4, 128),
        x_test=rng.normal(size=(32, 10)).astype(np.float32),
        y_test=rng.integers(0, 4, 32),
    )
    study = _study(
        tmp_path,
        "failing",
        [
            "dataset=npz",
            f"dataset.path={data}",
            "optimizer=sgd",
            "metrics=none",
            "trainer.max_steps=5",
            "trainer.num_threads=1",
            "trainer.progress=false",
        ],
        [
            {"optimizer.batch_size": 64, "optimizer.lr": [0.05, 0.1, 0.2]},
            {"optimizer.batch_size": 5000, "optimizer.lr": 0.1},
        ],
    )  # larger than the npz's 128 examples
    sweep_dir = tmp_path / "failing"
    _sweep(slurm_cluster, study, "--sweep-dir", sweep_dir)
    final = _wait(
        "every job finished",
        lambda: (
            (s := _status(slurm_cluster, sweep_dir))["counts"]["RUNNING"] == 0 and s["counts"]["MISSING"] == 0 and s
        ),
        300,
    )
    assert final["counts"] == {"COMPLETED": 3, "RUNNING": 0, "FAILED": 1, "DIVERGED": 0, "MISSING": 0}
    (failed,) = [j for j in final["jobs"] if j["bucket"] == "FAILED"]
    assert "optimizer.batch_size=5000" in failed["overrides"] and "larger than" in failed["detail"]
    text = subprocess.run([IJR_STATUS, str(sweep_dir)], env=_env(slurm_cluster), capture_output=True, text=True).stdout
    assert "FAILED 1" in text and "optimizer.batch_size=5000 optimizer.lr=0.1 seed=0" in text


@pytest.mark.slow
def test_a_requeued_running_job_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_run(slurm_cluster, tmp_path):
    reference = tmp_path / "reference"  # the same run, uninterrupted, outside SLURM (in parallel)
    local = subprocess.Popen(
        [IJR_TRAIN, *LONG, "trainer.max_steps=2000", f"hydra.run.dir={reference}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    study = _study(tmp_path, "requeue", [*LONG[:5], "trainer.max_steps=2000"], [{"optimizer.lr": 0.1}])
    sweep_dir = tmp_path / "requeue"
    _sweep(slurm_cluster, study, "--sweep-dir", sweep_dir)
    run_dir = sweep_dir / "optimizer.lr=0.1,seed=0"
    (job_id,) = [json.loads(line)["job_id"] for line in (sweep_dir / "submissions.jsonl").read_text().splitlines()]
    _wait(
        "a checkpoint past step 200",
        lambda: (
            (run_dir / "checkpoint.pt").exists()
            and (_run_status(run_dir) or {}).get("status") == "RUNNING"
            and len((run_dir / "metrics.jsonl").read_text().splitlines()) > 3
        ),
        120,
    )
    slurm_cluster.run("scontrol", "requeue", job_id)
    stopped = _wait("the run to stop", lambda: (s := _run_status(run_dir))["status"] != "RUNNING" and s, 60)
    assert stopped["status"] == "STOPPED" and "SIGTERM" in stopped["error"], stopped.get("error")
    at = stopped["attempts"][0]["stopped_at_step"]
    assert 0 < at < 2000
    _wait("the job to be pending again", lambda: slurm_cluster.job_state(job_id) == "PENDING", 60)
    assert _status(slurm_cluster, sweep_dir)["counts"]["RUNNING"] == 1  # requeued: not FAILED
    slurm_cluster.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")  # skip the ~11 s hold
    final = _wait("COMPLETED", lambda: (s := _run_status(run_dir))["status"] == "COMPLETED" and s, 180)
    assert [a["resumed_from_step"] for a in final["attempts"]] == [None, at]
    assert final["attempts"][1]["slurm"]["SLURM_RESTART_COUNT"] == "1"
    assert slurm_cluster.field(job_id, "Restarts") == "1"
    assert local.wait(240) == 0, local.stderr.read()
    assert _rows(run_dir / "metrics.jsonl") == _rows(reference / "metrics.jsonl")


@pytest.mark.slow
def test_a_job_at_its_time_limit_is_signalled_checkpoints_is_requeued_and_resumes(slurm_cluster, tmp_path):
    # a 1-minute limit with SIGUSR2 45 s before it; the run needs ~40 s of training, so it is signalled
    study = _study(tmp_path, "timelimit", [*LONG[:5], "trainer.max_steps=4000"], [{"optimizer.lr": 0.1}])
    sweep_dir = tmp_path / "timelimit"
    _sweep(
        slurm_cluster,
        study,
        "--sweep-dir",
        sweep_dir,
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=45",
        "hydra.launcher.max_num_timeout=2",
    )
    run_dir = sweep_dir / "optimizer.lr=0.1,seed=0"
    (job_id,) = [json.loads(line)["job_id"] for line in (sweep_dir / "submissions.jsonl").read_text().splitlines()]
    assert slurm_cluster.field(job_id, "TimeLimit") == "00:01:00"

    def explain():
        logs = "".join(p.read_text()[-1500:] for p in (sweep_dir / ".submitit").glob("*/*_log.*"))
        return f"{slurm_cluster.diagnose(job_id)}\nrun status: {_run_status(run_dir)}\nsubmitit logs:\n{logs}"

    # the clock for the signal starts when the job runs (on a loaded machine it may wait in the queue first)
    _wait("the job to run", lambda: slurm_cluster.job_state(job_id) != "PENDING", 180, explain)
    stopped = _wait(
        "SIGUSR2 to stop the run", lambda: (s := _run_status(run_dir)) and s["status"] != "RUNNING" and s, 120, explain
    )
    assert stopped["status"] == "STOPPED" and "SIGUSR2" in stopped["error"], stopped.get("error")
    at = stopped["attempts"][0]["stopped_at_step"]
    assert 0 < at < 4000
    # submitit requeued it (scontrol requeue from inside the job); let the second run have time to finish
    _wait("submitit to requeue the job", lambda: slurm_cluster.job_state(job_id) == "PENDING", 60)
    slurm_cluster.run("scontrol", "update", f"JobId={job_id}", "TimeLimit=10", "StartTime=now")
    final = _wait("COMPLETED", lambda: (s := _run_status(run_dir))["status"] == "COMPLETED" and s, 240)
    assert [a["resumed_from_step"] for a in final["attempts"]] == [None, at]
    assert [a.get("stopped_at_step") for a in final["attempts"]] == [at, None]
    log = "".join(p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.*"))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
