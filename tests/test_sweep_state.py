"""A sweep directory's state (ijr_cli/sweep_state.py) and the `ijr-status` command, without a cluster: run
directories and SLURM queue answers are made up, one per case."""

from __future__ import annotations

import json
import os
import socket

import pytest
from helpers import cli

from ijr_cli.core import records
from ijr_cli.sweep import state as sweep_state
from ijr_cli.sweep.state import classify


def _run(tmp_path, name, status=None, rows=(), attempts=None, raw=None):
    d = tmp_path / name
    d.mkdir(parents=True)
    if raw is not None:
        (d / "status.json").write_text(raw)
    elif status is not None:
        records.write_json_atomic(
            d / "status.json",
            {
                "status": status,
                "attempts": attempts or [],
                "total_steps": 100,
                "error": "boom\nValueError: bad lr",
                "stop_reason": "max_steps",
            },
        )
    if rows:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 9')  # torn tail
    return d


SLURM_ATTEMPT = {
    "host": "node7",
    "pid": 1,
    "slurm": {"SLURM_JOB_ID": "44", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "4"},
}


@pytest.mark.parametrize(
    "case",
    [
        # (status, attempts, submission job id, queue, expected bucket, text in detail)
        ("COMPLETED", [], None, None, "COMPLETED", "max_steps"),
        ("DIVERGED", [], None, None, "DIVERGED", ""),
        ("FAILED", [], None, None, "FAILED", "ValueError: bad lr"),
        ("FAILED", [SLURM_ATTEMPT], "40_4", {"40_4": "PENDING"}, "RUNNING", "SLURM job 40_4 PENDING"),  # resubmitted
        ("STOPPED", [SLURM_ATTEMPT], None, {"40_4": "PENDING", "44": "PENDING"}, "RUNNING", "PENDING (run stopped"),
        ("STOPPED", [SLURM_ATTEMPT], None, {}, "FAILED", "not requeued"),
        ("RUNNING", [SLURM_ATTEMPT], None, {"40_4": "RUNNING"}, "RUNNING", "SLURM job 40_4 RUNNING"),
        ("RUNNING", [SLURM_ATTEMPT], None, {"40_4": "TIMEOUT"}, "FAILED", "ended TIMEOUT"),
        ("RUNNING", [SLURM_ATTEMPT], None, None, "RUNNING", "on node7"),  # no SLURM to ask: trust the file
        ("RUNNING", [{"host": socket.gethostname(), "pid": 2**22 + 12345}], None, None, "FAILED", "is gone"),
        (
            "RUNNING",
            [
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "pid_start_ticks": records.process_start_ticks(os.getpid()),
                }
            ],
            None,
            None,
            "RUNNING",
            "",
        ),
    ],
)
def test_each_run_state_falls_in_its_bucket(tmp_path, case):
    status, attempts, job_id, queue, bucket, detail = case
    d = _run(tmp_path, "a=1", status, rows=[{"step": 0}, {"step": 50}], attempts=attempts)
    state = classify(d, "a=1", ["a=1"], {"job_id": job_id} if job_id else None, queue)
    assert state.bucket == bucket and detail in state.detail, state
    assert state.step == 50 and state.total_steps == 100  # the torn last line is skipped


def test_jobs_without_a_run_directory_are_running_while_queued_else_missing(tmp_path):
    d = tmp_path / "never"
    queued = classify(d, "never", ["x=1"], {"job_id": "7_1"}, {"7_1": "PENDING"})
    assert queued.bucket == "RUNNING" and "PENDING" in queued.detail
    gone = classify(d, "never", ["x=1"], {"job_id": "7_1"}, {"7_1": "CANCELLED"})
    assert gone.bucket == "MISSING" and "CANCELLED" in gone.detail and "never started" in gone.detail
    assert classify(d, "never", ["x=1"], None, None).bucket == "MISSING"
    bad = classify(_run(tmp_path, "bad", raw="{not json"), "bad", [], None, None)
    assert bad.bucket == "FAILED" and "unreadable" in bad.detail


def test_expected_jobs_come_from_the_plan_the_ledger_and_the_run_directories(tmp_path):
    sweep_state.write_plan(
        tmp_path, {"study": "s", "jobs": [{"name": "a=1", "overrides": ["a=1"]}, {"name": "a=2", "overrides": ["a=2"]}]}
    )
    sweep_state.record_submissions(tmp_path, [{"job_id": "9", "run_dir": "a=3", "overrides": ["a=3"]}])
    _run(tmp_path, "a=1", "COMPLETED")
    d = _run(tmp_path, "b=1", "FAILED")
    (d / "overrides.yaml").write_text("- b=1\n")
    states = {s.name: s for s in sweep_state.sweep_states(tmp_path, query_slurm=False)}
    assert {n: s.bucket for n, s in states.items()} == {
        "a=1": "COMPLETED",
        "a=2": "MISSING",
        "a=3": "MISSING",
        "b=1": "FAILED",
    }
    assert states["b=1"].overrides == ["b=1"] and states["a=3"].job_id == "9"
    assert sweep_state.counts(list(states.values())) == {
        "COMPLETED": 1,
        "RUNNING": 0,
        "FAILED": 1,
        "DIVERGED": 0,
        "MISSING": 2,
    }


def test_ijr_status_prints_counts_and_failures_with_their_overrides(tmp_path):
    sweep_state.write_plan(
        tmp_path,
        {
            "study": "s",
            "launcher": "local",
            "launched": "now",
            "jobs": [
                {"name": "lr=1,seed=0", "overrides": ["lr=1", "seed=0"]},
                {"name": "lr=2,seed=0", "overrides": ["lr=2", "seed=0"]},
            ],
        },
    )
    _run(tmp_path, "lr=1,seed=0", "COMPLETED")
    _run(tmp_path, "lr=2,seed=0", "FAILED")
    r = cli("ijr-status", [tmp_path])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "of sweep s" in lines[0] and lines[1].split() == [
        "COMPLETED",
        "1",
        "RUNNING",
        "0",
        "FAILED",
        "1",
        "DIVERGED",
        "0",
        "MISSING",
        "0",
    ]
    assert any(ln.split()[:3] == ["FAILED", "lr=2", "seed=0"] and "ValueError: bad lr" in ln for ln in lines)
    assert not any(ln.strip().startswith("COMPLETED lr=1") for ln in lines)  # listed only with --all
    r = cli("ijr-status", [tmp_path, "--json"])
    assert json.loads(r.stdout)["counts"]["FAILED"] == 1


@pytest.mark.parametrize(
    "make,message", [(lambda p: p / "nothere", "is not a directory"), (lambda p: p, "holds no runs and no sweep plan")]
)
def test_ijr_status_bad_input_is_one_line_and_exit_2(tmp_path, make, message):
    r = cli("ijr-status", [make(tmp_path)])
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and message in err[0], r.stderr
