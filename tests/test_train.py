"""Training runs in-process on the composed configs: determinism, resume, divergence, stopping, status files."""

import json
from pathlib import Path

import pytest
from conftest import ROOT, TINY
from helpers import run_in_process
from omegaconf import OmegaConf

from ijr_cli.core import records
from ijr_cli.core.arrays import read_arrays
from ijr_cli.core.config import validate
from ijr_cli.core.errors import UserError
from ijr_cli.core.metric_names import EVAL_METRICS
from ijr_cli.run import experiment


def _run(compose, tmp: Path, overrides, name="run"):
    return run_in_process(compose, tmp / name, overrides), tmp / name


def _stable(row):
    """A row or summary without wall-clock values (`elapsed_s`, each group's cost `<group>_s`, `wall_time_s`)."""
    return {k: v for k, v in row.items() if not k.endswith("_s")}


def _rows(run_dir):
    return [_stable(r) for r in records.read_rows(run_dir / "metrics.jsonl")]


def test_run_writes_a_self_describing_directory(compose, tmp_path):
    code, d = _run(compose, tmp_path, TINY)
    assert code == 0
    status = json.loads((d / "status.json").read_text())
    assert status["status"] == "COMPLETED" and status["stop_reason"] == "max_steps"
    assert {"host", "device", "git", "versions", "attempts", "num_params"} <= set(status)
    assert status["versions"]["torch"] and status["attempts"][0]["resumed_from_step"] is None
    assert status["step_passes"] == {
        "forward": 1,
        "backward": 1,
        "double_backward": 0,
        "extra_vs_plain": {"forward": 0, "backward": 0, "double_backward": 0},
    }
    rows = _rows(d)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    assert {
        "train_loss",
        "train_acc",
        "train_ce",
        "test_loss",
        "test_acc",
        "test_ce",
        "gen_gap_loss",
        "gen_gap_acc",
        "lr",
    } <= set(rows[-1])
    summary = json.loads((d / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["test_acc"] == rows[-1]["test_acc"]
    assert summary["gen_gap_acc"] == pytest.approx(summary["train_acc"] - summary["test_acc"])
    assert OmegaConf.load(d / "config.yaml").optimizer.lr == 0.05
    assert (d / "checkpoint.pt").exists() and not (d / "checkpoint.pt.tmp").exists()


def test_same_seed_same_numbers_other_seed_differs(compose, tmp_path):
    _run(compose, tmp_path, TINY, "a")
    _run(compose, tmp_path, TINY, "b")
    _run(compose, tmp_path, TINY + ["seed=1"], "c")
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b") != _rows(tmp_path / "c")


def test_measuring_does_not_change_training(compose, tmp_path):
    base = TINY + ["regularizer=[mixup,augment]", "dataset.input_shape=[1,4,4]"]
    _run(compose, tmp_path, base + ["metrics=none"], "plain")
    _run(compose, tmp_path, base + ["metrics=full", "metrics.n_input_jac=4"], "measured")
    measured = _rows(tmp_path / "measured")
    assert all("sharpness" in r and "jac_op_norm" in r and "input_jac_max" in r for r in measured)
    assert measured[0]["dist_init"] == 0.0
    keep = {"step", "lr", "batch_loss", *EVAL_METRICS}
    assert [{k: v for k, v in r.items() if k in keep} for r in measured] == _rows(tmp_path / "plain")


EJR_COMPOSED = [
    "regularizer=[label_smoothing,mixup,augment,ejr_v2]",
    "dataset.input_shape=[1,4,4]",
    "optimizer.weight_decay=5e-4",
    "schedule=step",
    "regularizer.rho_reg=0.5",
]


APPENDIX_D = [
    "metrics.names=[sharpness,batch_sharpness,batch_lambda_max,q_lambda_sqrt,m_cos,align_S_top_eig,m_mrl,"
    "jq1_norm_hist,weight_norm_layers,trajectory]",
    "metrics.trajectory_steps=12",
    "metrics.trajectory_dim=8",
    "metrics.sharpness_k=auto",
    "metrics.n_per_example=20",
    "metrics.batch_sharpness_batches=3",
]


def _arrays(run_dir):
    return {k: (v.steps.tolist(), v.values.tolist(), v.labels) for k, v in read_arrays(run_dir).items()}


@pytest.mark.parametrize(
    "extra",
    [[], EJR_COMPOSED, ["regularizer=ejr", "trainer.grad_chunk=12"], APPENDIX_D],
    ids=["plain", "ejr_v2-composed", "ejr-chunked", "appendix-d-arrays"],
)
def test_interrupted_run_resumes_to_identical_metrics(compose, tmp_path, monkeypatch, extra, capsys):
    over = TINY + ["optimizer.momentum=0.9", "regularizer=label_smoothing", "trainer.checkpoint_every=15"] + extra
    _run(compose, tmp_path, over, "whole")
    real_step = experiment.train_step

    def failing_step(model, opt, data, step, spec):
        if step == 33:
            raise KeyboardInterrupt
        return real_step(model, opt, data, step, spec)

    monkeypatch.setattr(experiment, "train_step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        _run(compose, tmp_path, over, "cut")
    status = json.loads((tmp_path / "cut" / "status.json").read_text())
    assert status["status"] == "FAILED" and "interrupted" in status["error"]
    monkeypatch.setattr(experiment, "train_step", real_step)
    assert _run(compose, tmp_path, over, "cut")[0] == 0
    status = json.loads((tmp_path / "cut" / "status.json").read_text())
    assert status["status"] == "COMPLETED" and [a["resumed_from_step"] for a in status["attempts"]] == [None, 30]
    assert status["resumed"] and status["wall_time_s"] == pytest.approx(sum(a["train_s"] for a in status["attempts"]))
    assert "over 2 attempts (resumed from step 30) -> " in capsys.readouterr().out  # the console summary says so
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
    assert _arrays(tmp_path / "cut") == _arrays(tmp_path / "whole")  # arrays.bin records too (after truncation)
    assert ("q_lambda_sqrt" in _arrays(tmp_path / "whole")) == (extra is APPENDIX_D)
    whole = json.loads((tmp_path / "whole" / "summary.json").read_text())
    cut = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert _stable(whole) == _stable(cut)


def test_completed_run_is_not_run_again(compose, tmp_path, capsys):
    _run(compose, tmp_path, TINY)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert _run(compose, tmp_path, TINY)[0] == 0
    assert "already COMPLETED" in capsys.readouterr().out
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_resuming_with_another_config_is_refused(compose, tmp_path):
    _run(compose, tmp_path, TINY)
    with pytest.raises(UserError, match="different config .*optimizer.lr"):
        _run(compose, tmp_path, TINY + ["optimizer.lr=0.5"])


def test_divergence_is_a_result(compose, tmp_path):
    code, d = _run(compose, tmp_path, TINY + ["loss=mse", "optimizer.lr=1e4", "trainer.sync_every=2"])
    assert code == 0
    summary = json.loads((d / "summary.json").read_text())
    assert summary["status"] == "DIVERGED" and summary["diverged_at_step"] <= 10
    assert json.loads((d / "status.json").read_text())["status"] == "DIVERGED"


def test_train_acc_goal_stops_early(compose, tmp_path):
    code, d = _run(compose, tmp_path, TINY + ["trainer.max_steps=400", "trainer.train_acc_goal=0.5"])
    summary = json.loads((d / "summary.json").read_text())
    assert summary["stop_reason"] == "train_acc_goal" and summary["train_acc"] >= 0.5 and summary["steps"] < 400


def test_epochs_set_the_length(compose, tmp_path):
    code, d = _run(compose, tmp_path, TINY + ["trainer.epochs=2.5", "trainer.eval_every=100"])
    assert json.loads((d / "summary.json").read_text())["steps"] == 20  # 8 steps per epoch (256 / 32)


def test_full_batch_gd_and_sam_and_schedules_run(compose, tmp_path):
    for i, extra in enumerate(
        (
            ["optimizer=gd", "optimizer.batch_size=null", "optimizer.lr=0.5"],
            ["optimizer=sam", "optimizer.adaptive=true"],
            ["schedule=step", "optimizer.nesterov=true", "optimizer.momentum=0.5"],
            ["schedule=cosine", "schedule.warmup_steps=5", "trainer.grad_chunk=7"],
        )
    ):
        code, d = _run(compose, tmp_path, TINY + extra, f"r{i}")
        assert code == 0 and json.loads((d / "summary.json").read_text())["status"] == "COMPLETED"


def _options(group):
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group", ["dataset", "model", "loss", "optimizer", "regularizer", "schedule", "trainer", "metrics", "launcher"]
)
def test_every_option_composes_and_validates(compose, group):
    for option in _options(group):
        typed = OmegaConf.to_object(compose([f"{group}={option}"]))
        validate(typed)


def test_regularizers_merge(compose):
    cfg = compose(["regularizer=[mixup,augment,label_smoothing]"])
    assert (cfg.regularizer.mixup_alpha, cfg.regularizer.augment, cfg.regularizer.label_smoothing) == (1.0, True, 0.1)


@pytest.mark.parametrize("model", _options("model"))
def test_every_model_option_trains_a_step(compose, tmp_path, model):
    over = [
        "dataset=synthetic",
        "dataset.input_shape=[3,32,32]",
        "dataset.num_train_examples=4",
        "dataset.num_test_examples=2",
        f"model={model}",
        *(["model.depth=10", "model.width_factor=1"] if model == "wrn" else []),  # (fields only wrn reads)
        "loss=ce",
        "optimizer=sgd",
        "optimizer.batch_size=2",
        "trainer.max_steps=1",
        "trainer.progress=false",
        "metrics=none",
    ]  # the step, not the (tested elsewhere) measurements: seconds instead of a minute
    code, d = _run(compose, tmp_path, over)
    assert code == 0 and json.loads((d / "summary.json").read_text())["steps"] == 1


def test_a_run_held_by_a_live_process_is_refused_a_dead_one_taken_over(compose, tmp_path):
    import subprocess

    _run(compose, tmp_path, TINY)
    status_path = tmp_path / "run" / "status.json"
    status = json.loads(status_path.read_text())
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        status["status"] = "RUNNING"
        status["attempts"][-1].update(pid=sleeper.pid, pid_start_ticks=records.process_start_ticks(sleeper.pid))
        status_path.write_text(json.dumps(status))
        with pytest.raises(UserError, match=f"in use by process {sleeper.pid}"):
            _run(compose, tmp_path, TINY)
        status["attempts"][-1]["pid_start_ticks"] += 1  # the pid now belongs to another process: a reused pid
        status_path.write_text(json.dumps(status))
        assert _run(compose, tmp_path, TINY)[0] == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    assert json.loads(status_path.read_text())["status"] == "COMPLETED"


@pytest.mark.parametrize("variant", ["ejr", "ejr_sam", "ejr_v2"])
def test_ejr_variants_change_training_and_record_their_cost(compose, tmp_path, variant):
    _run(compose, tmp_path, TINY, "base")
    code, d = _run(compose, tmp_path, TINY + [f"regularizer={variant}"], variant)
    assert code == 0 and _rows(d) != _rows(tmp_path / "base")
    passes = json.loads((d / "status.json").read_text())["step_passes"]
    extra = {"ejr": {"forward": 0, "backward": 0, "double_backward": 1}}.get(
        variant, {"forward": 1, "backward": 1, "double_backward": 0}
    )
    assert passes["extra_vs_plain"] == extra
    config = OmegaConf.load(d / "config.yaml").regularizer
    assert config.jacobian == variant


def test_ejr_composes_with_sam_and_batchnorm_models(compose, tmp_path):
    over = [
        "dataset=synthetic",
        "dataset.input_shape=[3,8,8]",
        "dataset.num_train_examples=8",
        "dataset.num_test_examples=4",
        "model=wrn",
        "model.depth=10",
        "model.width_factor=1",
        "loss=ce",
        "optimizer=sam",
        "optimizer.batch_size=4",
        "regularizer=ejr",
        "trainer.max_steps=2",
        "trainer.progress=false",
    ]
    code, d = _run(compose, tmp_path, over)
    assert code == 0 and json.loads((d / "summary.json").read_text())["status"] == "COMPLETED"
    assert json.loads((d / "status.json").read_text())["step_passes"]["double_backward"] == 2
