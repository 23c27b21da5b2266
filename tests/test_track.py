"""The live loggers (`ijr_cli.track`) with the real libraries: TensorBoard's event files read back by TensorBoard's
own EventAccumulator, MLflow's runs by MlflowClient, W&B's offline run file by its protobuf records; each compared
with metrics.jsonl. A logger that fails never loses the run; a resume continues each logger's run; `ijr-report
--to` exports idempotently; the default imports none of these packages."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli
from helpers import ROOT, can_mount_tmpfs, cli, run_in_process

for _package in ("tensorboard", "mlflow", "wandb"):  # `make install` installs them (the `loggers` extra)
    pytest.importorskip(_package)

SHARPNESS_K = ["metrics.sharpness_k=2", "trainer.checkpoint_every=20"]
IJR_TRAIN_PY = str(Path(sys.executable).with_name("ijr-train"))


def rows_of(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def expected(run_dir: Path, skip=()):
    """{metric: {step: value}} of metrics.jsonl as the loggers get it (lists as name_i, numbers only)."""
    from ijr_cli.track.base import scalars

    out = {}
    for row in rows_of(run_dir):
        for k, v in scalars(row).items():
            if k not in skip:
                out.setdefault(k, {})[row["step"]] = v
    return out


def tensorboard_scalars(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    return ea, {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def assert_tensorboard_equals_metrics(tb_dir: Path, run_dir: Path):
    ea, got = tensorboard_scalars(tb_dir)
    want = expected(run_dir)
    assert set(got) == set(want)
    for tag, points in got.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{tag}: a step twice: {steps}"
        assert dict(points) == {s: float(np.float32(v)) for s, v in want[tag].items()}, tag  # (float32 events)
    return ea


# ------------------------------------------------------------------------------------------ W&B's offline file
def wandb_records(run_file: Path):
    """The records of a W&B run file (.wandb): W&B's LevelDB-style log (a 7-byte header, then 32 KiB blocks of
    chunks, each with a 7-byte header: CRC32, length, type full/first/middle/last), each a protobuf Record.
    wandb 0.31 moved its own reader into the Go core, so the test reads the format itself."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pieces, records = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            pos += block - pos % block if pos % block else 0
            continue
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            records.append(record)
    return records


def wandb_history(run_dir: Path):
    """(run record, {metric: {step: value}}, summary) of every offline W&B run below run_dir/wandb, in order."""
    runs = []
    for path in sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))):
        run, history, summary = None, {}, {}
        for r in wandb_records(Path(path)):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run = r.run
            elif kind == "history":
                step = r.history.step.num
                for item in r.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        history.setdefault(key, {})[step] = json.loads(item.value_json)
            elif kind == "summary":
                for item in r.summary.update:
                    summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        runs.append((run, history, summary))
    return runs


# ------------------------------------------------------------------------------------------ one run, three loggers
@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A tiny run with all three loggers, in a sweep directory (sweep.yaml) below outputs/."""
    sweep = tmp_path_factory.mktemp("track") / "outputs" / "sweeps" / "study"
    sweep.mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("name: study\n")
    run_dir = sweep / "optimizer.lr=0.05"
    r = run_cli([*TINY, *SHARPNESS_K, "logger=[tensorboard,mlflow,wandb]", f"hydra.run.dir='{run_dir}'"])
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr
    return run_dir


def test_tensorboard_holds_every_logged_scalar_the_eigenvalue_chart_and_hparams(logged_run):
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    ea = assert_tensorboard_equals_metrics(logged_run / "tb", logged_run)
    layout = layout_pb2.Layout.FromString(ea.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    chart = layout.category[0].chart[0]
    assert chart.multiline.tag == ["^sharpness_k_[0-9]+$"]
    assert {"sharpness_k_1", "sharpness_k_2"} <= set(ea.Tags()["scalars"])
    content = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(v) for tag, v in ea.PluginTagToContent("hparams").items()
    }
    start = content["_hparams_/session_start_info"].session_start_info.hparams
    assert start["optimizer.lr"].number_value == 0.05 and start["loss.name"].string_value == "ce"
    assert not any(k.startswith("logger.") for k in start)
    metrics = {m.name.tag for m in content["_hparams_/experiment"].experiment.metric_infos}
    assert {"test_acc", "train_loss", "sharpness"} <= metrics
    assert content["_hparams_/session_end_info"].session_end_info.status == api_pb2.STATUS_SUCCESS


def test_mlflow_run_holds_params_metric_histories_tags_and_artifacts(logged_run):
    from mlflow.tracking import MlflowClient

    status = json.loads((logged_run / "status.json").read_text())
    kept = status["loggers"]["mlflow"]
    outputs = logged_run.parents[2]
    assert kept["tracking_uri"] == f"sqlite:///{outputs / 'mlflow.db'}"  # the local store beside outputs/
    client = MlflowClient(kept["tracking_uri"])
    run = client.get_run(kept["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "study"  # the sweep's name
    assert run.info.status == "FINISHED" and run.info.run_name == "optimizer.lr=0.05"
    tags = run.data.tags
    assert tags["ijr.status"] == "COMPLETED" and tags["ijr.sweep"] == "study"
    assert tags["ijr.run_dir"] == str(logged_run) and tags["ijr.family"] == "none"
    assert tags["mlflow.source.git.commit"] == status["git"]["commit"]
    config = yaml_flat(logged_run / "config.yaml")
    assert run.data.params == {
        k: "null" if v is None else str(v) for k, v in config.items() if not k.startswith("logger.")
    }
    for key, points in expected(logged_run).items():
        history = client.get_metric_history(run.info.run_id, key)
        assert {m.step: m.value for m in history} == points, key
        assert len(history) == len(points), key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"summary.json", "config.yaml"}


def yaml_flat(path: Path):
    import yaml

    from ijr_cli.core.records import flatten

    return flatten(yaml.safe_load(path.read_text()))


def test_wandb_offline_run_holds_the_history_config_and_summary(logged_run):
    status = json.loads((logged_run / "status.json").read_text())
    kept = status["loggers"]["wandb"]
    ((run, history, summary),) = wandb_history(logged_run)
    assert run.run_id == kept["id"] and kept["mode"] == "offline"
    assert run.run_group == "study" and run.job_type == "none" and run.display_name == "optimizer.lr=0.05"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["optimizer.lr"] == 0.05 and "logger.wandb.mode" not in config
    assert {k: {s: float(v) for s, v in p.items()} for k, p in history.items()} == expected(logged_run)
    final = json.loads((logged_run / "summary.json").read_text())
    assert summary["status"] == "COMPLETED" and summary["test_acc"] == final["test_acc"]


def interrupt_at_step(at: int, monkeypatch):
    """The run's step raises KeyboardInterrupt at step `at` (its rows before it logged; FAILED, "interrupted");
    returns the real step, to put back for the resume."""
    from ijr_cli.run import experiment

    real_step = experiment.train_step

    def interrupted(model, optimizer, data, step, spec):
        if step == at:
            raise KeyboardInterrupt
        return real_step(model, optimizer, data, step, spec)

    monkeypatch.setattr(experiment, "train_step", interrupted)
    return real_step


# ------------------------------------------------------------------------------------------ resume, packs
def test_a_resumed_run_continues_each_loggers_run_with_no_step_twice(compose, tmp_path, monkeypatch):
    """Interrupted at step 35 (its rows up to 30 logged, its checkpoint at 20), then resumed: TensorBoard shows
    each step once (purge_step=0, the rows up to the checkpoint rewritten), MLflow continues the same run with
    each step once, W&B the same id."""
    from mlflow.tracking import MlflowClient

    from ijr_cli.run import experiment

    (tmp_path / "sweep.yaml").write_text("name: resumed\n")
    run_dir = tmp_path / "run"
    overrides = [*TINY, *SHARPNESS_K, "logger=[tensorboard,mlflow,wandb]"]
    real_step = interrupt_at_step(35, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_in_process(compose, run_dir, overrides)
    first = json.loads((run_dir / "status.json").read_text())
    assert first["status"] == "FAILED" and max(r["step"] for r in rows_of(run_dir)) == 30
    client = MlflowClient(first["loggers"]["mlflow"]["tracking_uri"])
    run_id = first["loggers"]["mlflow"]["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"
    sent_first = {m.step: m.value for m in client.get_metric_history(run_id, "elapsed_s")}
    monkeypatch.setattr(experiment, "train_step", real_step)
    assert run_in_process(compose, run_dir, overrides) == 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "COMPLETED" and status["attempts"][1]["resumed_from_step"] == 20
    assert status["loggers"]["tensorboard"]["rewritten_through_step"] == 20  # then purged and rewritten
    assert_tensorboard_equals_metrics(run_dir / "tb", run_dir)
    assert status["loggers"]["mlflow"]["run_id"] == run_id  # the same MLflow run, continued
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ijr.status"] == "COMPLETED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    for key, points in expected(run_dir).items():
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        assert len(history) == len({s for s, _ in history}) == len(points), key
        if key.endswith("_s"):  # timings: the values a recomputed row changes; MLflow keeps the first attempt's
            assert {st for st, _ in history} == set(points), key
            assert {st: v for st, v in history if st > 30} == {st: v for st, v in points.items() if st > 30}, key
            if key == "elapsed_s":
                assert {st: v for st, v in history if st <= 30} == sent_first
        else:
            assert dict(history) == points, key
    runs = wandb_history(run_dir)
    assert [r.run_id for r, _, _ in runs] == [status["loggers"]["wandb"]["id"]] * 2  # one W&B run, resumed
    assert min(runs[1][1]["train_loss"]) == 30  # the resumed attempt logs from the step after the checkpoint
    union = {}
    for _, history, _ in runs:
        for k, points in history.items():
            union.setdefault(k, {}).update(points)
    assert {k: {s: float(v) for s, v in p.items()} for k, p in union.items() if not k.endswith("_s")} == {
        k: p for k, p in expected(run_dir).items() if not k.endswith("_s")
    }


def test_loggers_added_on_resume_get_the_earlier_rows_too(compose, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ijr_cli.run import experiment

    run_dir = tmp_path / "run"
    real_step = interrupt_at_step(35, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_in_process(compose, run_dir, TINY)  # no logger
    monkeypatch.setattr(experiment, "train_step", real_step)
    assert run_in_process(compose, run_dir, [*TINY, "logger=[tensorboard,mlflow,wandb]"]) == 0
    assert_tensorboard_equals_metrics(run_dir / "tb", run_dir)
    kept = json.loads((run_dir / "status.json").read_text())["loggers"]
    client = MlflowClient(kept["mlflow"]["tracking_uri"])
    for key, points in expected(run_dir).items():
        assert {m.step: m.value for m in client.get_metric_history(kept["mlflow"]["run_id"], key)} == points, key
    ((_, history, _),) = wandb_history(run_dir)
    assert {k: {s: float(v) for s, v in p.items()} for k, p in history.items()} == expected(run_dir)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_resumed_shows_each_step_once(tmp_path):
    """kill -9 after rows beyond the checkpoint reached tb/; the same command resumes: TensorBoard (purged and
    rewritten) and MLflow (the same run, sent what it lacked) each hold every step once."""
    import signal
    import time

    import torch
    from mlflow.tracking import MlflowClient

    run_dir = tmp_path / "run"
    args = [*TINY, "trainer.max_steps=6000", "trainer.eval_every=50", "trainer.checkpoint_every=1000"]
    args += ["logger=[tensorboard,mlflow]", "logger.tensorboard.flush_secs=1", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([IJR_TRAIN_PY, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # until tb/ holds a step after the latest checkpoint
        if (run_dir / "checkpoint.pt").exists() and (run_dir / "tb").exists():
            checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"]
            points = tensorboard_scalars(run_dir / "tb")[1].get("test_acc", [])
            if points and max(st for st, _ in points) > checkpoint:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the moment to kill it"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "RUNNING"
    _, before = tensorboard_scalars(run_dir / "tb")
    r = run_cli(args)
    assert r.returncode == 0, r.stderr
    status = json.loads((run_dir / "status.json").read_text())
    resumed = status["attempts"][1]["resumed_from_step"]
    assert status["status"] == "COMPLETED" and resumed > 0
    assert max(s for s, _ in before["test_acc"]) > resumed  # rows after the checkpoint had reached tb/
    assert_tensorboard_equals_metrics(run_dir / "tb", run_dir)
    kept = status["loggers"]["mlflow"]
    client = MlflowClient(kept["tracking_uri"])
    assert len(client.search_runs([kept["experiment_id"]])) == 1
    for key, points in expected(run_dir).items():
        history = [(m.step, m.value) for m in client.get_metric_history(kept["run_id"], key)]
        assert sorted(st for st, _ in history) == sorted(points), key
        if not key.endswith("_s"):
            assert dict(history) == points, key


def test_each_member_of_a_pack_has_its_own_logger_runs(compose, tmp_path):
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from ijr_cli.run.pack import PackJob, run_pack

    sweep = tmp_path / "packed"
    sweep.mkdir()
    (sweep / "sweep.yaml").write_text("name: packed\n")
    jobs = []
    for i, own in enumerate([["optimizer.lr=0.05"], ["optimizer.lr=0.1", "seed=1"]]):
        cfg = compose([*TINY, "logger=[tensorboard,mlflow]", *own])
        jobs.append(PackJob(OmegaConf.to_object(cfg), sweep / str(i), OmegaConf.to_yaml(cfg, resolve=True), own))
    assert run_pack(jobs, "test", force_packed=True) == {}
    ids = set()
    for job in jobs:
        status = json.loads((job.run_dir / "status.json").read_text())
        assert status["pack"]["size"] == 2 and status["status"] == "COMPLETED"
        assert_tensorboard_equals_metrics(job.run_dir / "tb", job.run_dir)
        kept = status["loggers"]["mlflow"]
        client = MlflowClient(kept["tracking_uri"])
        history = client.get_metric_history(kept["run_id"], "test_acc")
        assert {m.step: m.value for m in history} == expected(job.run_dir)["test_acc"]
        assert client.get_run(kept["run_id"]).data.params["optimizer.lr"] == str(job.cfg.optimizer.lr)
        ids.add(kept["run_id"])
    assert len(ids) == 2
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    board = EventMultiplexer()  # what `tensorboard --logdir SWEEP_DIR` reads: one run per member
    board.AddRunsFromDirectory(str(sweep))
    assert sorted(board.Runs()) == ["0/tb", "1/tb"]


# ------------------------------------------------------------------------------------------ failures
def test_an_unreachable_tracking_server_warns_once_and_the_run_completes(tmp_path):
    run_dir = tmp_path / "run"
    r = run_cli(
        [
            *TINY,
            "logger=[mlflow,tensorboard]",
            "logger.mlflow.tracking_uri=http://127.0.0.1:9",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "the mlflow logger failed (start: MlflowException" in warnings[0], r.stderr
    assert "which goes on" in warnings[0] and f"ijr-report {run_dir} --to mlflow" in warnings[0]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "COMPLETED"
    assert "Connection refused" in status["loggers"]["mlflow"]["disabled"]
    assert [r["step"] for r in rows_of(run_dir)] == list(range(0, 41, 10))
    assert_tensorboard_equals_metrics(run_dir / "tb", run_dir)  # the other logger went on


@pytest.mark.slow  # (an MLflow tracking server takes ~20 s to start here)
def test_a_tracking_server_that_dies_mid_run_turns_mlflow_off_and_the_run_goes_on(tmp_path):
    """A real `mlflow server`, killed while the run logs to it: one warning naming the step, the run COMPLETES
    with every row in metrics.jsonl, status.json says why MLflow was turned off."""
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen(
        [mlflow_cli, "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1", "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        run_dir = tmp_path / "run"
        args = [*TINY, "trainer.max_steps=6000", "trainer.eval_every=50", "logger=mlflow"]
        args += [f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}", "logger.mlflow.flush_secs=0"]
        args += ["logger.mlflow.request_timeout_s=2", "logger.mlflow.request_retries=0", f"hydra.run.dir={run_dir}"]
        proc = subprocess.Popen([IJR_TRAIN_PY, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if (run_dir / "metrics.jsonl").exists() and len(rows_of(run_dir)) >= 10:
                break
            time.sleep(0.05)
        os.killpg(server.pid, signal.SIGKILL)  # the server dies mid-run
        _, err = proc.communicate(timeout=300)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "the mlflow logger failed (step " in warnings[0], err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "COMPLETED" and status["loggers"]["mlflow"]["disabled"].startswith("step ")
    assert status["loggers"]["mlflow"]["run_id"]  # (the run it had, for a resume or an export to continue)
    assert [r["step"] for r in rows_of(run_dir)] == list(range(0, 6001, 50))


@pytest.mark.slow
@pytest.mark.skipif(not can_mount_tmpfs(), reason="cannot mount a tmpfs here (unshare -rm)")
def test_a_full_disk_under_tb_turns_tensorboard_off_and_the_run_goes_on(tmp_path):
    """tb/ on a 16 KiB tmpfs (a private mount namespace): TensorBoard's writes fail mid-run; one warning, the
    logger is off, the run COMPLETES with every row in metrics.jsonl."""
    run_dir = tmp_path / "run"
    (run_dir / "tb").mkdir(parents=True)
    args = [*TINY, "trainer.max_steps=400", "logger=tensorboard", "logger.tensorboard.flush_secs=1"]
    script = (
        f"mount -t tmpfs -o size=16k tmpfs {run_dir / 'tb'} && {IJR_TRAIN_PY} {' '.join(args)} hydra.run.dir={run_dir}"
    )
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "the tensorboard logger failed (step " in warnings[0], r.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "COMPLETED" and "tensorboard" in status["loggers"]
    assert "No space left on device" in status["loggers"]["tensorboard"]["disabled"]
    assert [r["step"] for r in rows_of(run_dir)] == list(range(0, 401, 10))


def test_a_logger_whose_package_is_missing_is_one_line_and_exit_2_naming_the_extra(tmp_path):
    """(The package is hidden from the run: sys.modules[name] = None makes it not found, as if not installed.)"""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['mlflow'] = None\n")
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{hide}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = run_cli([*TINY, "logger=[tensorboard,mlflow]", f"hydra.run.dir={run_dir}"], env=env)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "ijr-train: error: logger=mlflow needs the Python package mlflow, which is not installed: "
        "pip install 'ijr[mlflow]' (or drop mlflow from logger=)"
    )
    assert not run_dir.exists()
    sweep = tmp_path / "sweep"
    r = cli("ijr-sweep", ["lr_bs", "--tiny", "--sweep-dir", str(sweep), "logger=mlflow"], env=env)
    assert r.returncode == 2 and "logger=mlflow needs the Python package mlflow" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not list(sweep.glob("*/status.json"))


# ------------------------------------------------------------------------------------------ export
@pytest.mark.slow  # (a tiny sweep of 8 runs, then two exports: 35 s)
def test_export_to_mlflow_twice_gives_one_run_per_ijr_run_with_each_step_once(tmp_path):
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "outputs" / "sweeps" / "plain"
    r = cli("ijr-sweep", ["lr_bs", "--tiny", "--sweep-dir", str(sweep), "trainer.max_steps=20"], timeout=600)
    assert r.returncode == 0, r.stderr
    runs = sorted(p.parent for p in sweep.glob("*/status.json"))
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    for attempt in range(2):
        r = cli("ijr-report", [str(sweep), "--to", "mlflow", "--tracking-uri", uri])
        assert r.returncode == 0, r.stderr
        made = f"({len(runs)} new, 0 updated)" if attempt == 0 else f"(0 new, {len(runs)} updated)"
        assert f"{len(runs)} run(s) -> mlflow {made}: {uri}, experiment plain" in r.stdout
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("plain")
    found = client.search_runs([exp.experiment_id])
    assert len(found) == len(runs)
    for run in found:
        run_dir = Path(run.data.tags["ijr.run_dir"])
        assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
        for key, points in expected(run_dir).items():
            history = client.get_metric_history(run.info.run_id, key)
            assert len(history) == len(points) and {m.step: m.value for m in history} == points, key
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"summary.json", "config.yaml"}
    assert "test_acc" in found[0].data.metrics and found[0].data.params["seed"] in {"0", "1"}


def test_export_to_tensorboard_writes_each_run_again_from_its_metrics(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, f"hydra.run.dir={run_dir}"]).returncode == 0
    running = tmp_path / "running"
    running.mkdir()
    (running / "status.json").write_text(json.dumps({"status": "RUNNING", "created": ""}))
    (running / "metrics.jsonl").write_text('{"step": 0, "lr": 0.1}\n')
    for _ in range(2):
        r = cli("ijr-report", [str(run_dir), str(running), "--to", "tensorboard"])
        assert r.returncode == 0, r.stderr
        assert "1 run(s) -> tensorboard: each run's tb/" in r.stdout
        assert "not finished (RUNNING); not exported" in r.stderr
        assert len(list((run_dir / "tb").iterdir())) == 1  # written anew, not appended
        assert_tensorboard_equals_metrics(run_dir / "tb", run_dir)
    assert not (running / "tb").exists() and not list(tmp_path.glob("run/tb.*"))


# ------------------------------------------------------------------------------------------ the default
def test_the_default_imports_none_of_the_loggers_packages(tmp_path):
    """logger=none (ijr-train) and ijr-report without --to load no logger package; ijr-report loads no torch."""
    script = f"""
import sys
sys.argv = ["ijr-train", *{TINY!r}, "hydra.run.dir={tmp_path / "run"}"]
from ijr_cli.cli.train import train
try:
    train()
except SystemExit as e:
    assert not e.code, e.code
from ijr_cli.cli.report import main
try:
    main([{str(tmp_path / "run")!r}, "--no-figures", "--out", {str(tmp_path / "report")!r}])
except SystemExit as e:
    assert not e.code, e.code
packages = ("tensorboard", "mlflow", "wandb", "tensorboardX")
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] in packages or m == "torch.utils.tensorboard"))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "LOADED []" in r.stdout, r.stdout[-2000:]
    script = f"""
import sys
from ijr_cli.cli.report import main
try:
    main([{str(tmp_path / "run")!r}, "--no-figures", "--out", {str(tmp_path / "report2")!r}])
except SystemExit as e:
    assert not e.code, e.code
print("TORCH", "torch" in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "TORCH False" in r.stdout
