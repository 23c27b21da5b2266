"""`ijr-train` as users run it: Hydra behaviour, bad input (one line, exit 2, nothing half-written), SIGKILL resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import IJR_TRAIN, ROOT, TINY, run_cli


def test_help_lists_groups_not_the_schema():
    r = run_cli(["--help"])
    assert r.returncode == 0
    for group in ("dataset", "model", "optimizer", "regularizer", "schedule", "trainer", "metrics", "launcher", "loss"):
        assert f"{group}:" in r.stdout
    assert "ijr_train_schema" not in r.stdout and "fc_tanh" in r.stdout


def test_cfg_job_prints_the_composed_config():
    r = run_cli(["--cfg", "job", "optimizer=sgd", "optimizer.lr=0.03", "regularizer=[mixup,augment]"])
    assert r.returncode == 0, r.stderr
    assert "lr: 0.03" in r.stdout and "mixup_alpha: 1.0" in r.stdout and "augment: true" in r.stdout


def test_default_experiment_settings():
    r = run_cli(["--cfg", "job"])
    for line in ("name: digits", "activation: tanh", "name: mse", "name: gd", "batch_size: null", "lr: 0.1"):
        assert line in r.stdout


def test_multirun_runs_each_job_in_a_directory_named_by_its_swept_overrides(tmp_path):
    r = run_cli(["-m", *TINY, "trainer.max_steps=10", "optimizer.lr=0.01,0.02", f"hydra.sweep.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr
    for job in ("optimizer.lr=0.01", "optimizer.lr=0.02"):  # (as ijr-sweep names them; not 0, 1)
        assert json.loads((tmp_path / job / "status.json").read_text())["status"] == "COMPLETED"
    assert "optimizer.lr=0.02" in (tmp_path / "optimizer.lr=0.02" / "overrides.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["optimizer.lr=0.01", "optimizer.lr=0.02"]


def _corrupt_npz(tmp):
    p = tmp / "corrupt.npz"
    p.write_bytes(b"PK\x03\x04garbage")
    return p


def _a_file(tmp):
    p = tmp / "a_file"
    p.write_text("x")
    return p


def _bad_npz(tmp):
    """Two data bugs in real-looking files: a NaN in the inputs, and uint8 CIFAR-like images stored channels-first."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    x[3, 2] = np.nan
    y = np.arange(20) % 3
    np.savez(tmp / "nan.npz", x_train=x, y_train=y, x_test=np.zeros((4, 6), np.float32), y_test=y[:4])
    img = rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp / "chw.npz", x_train=img, y_train=y, x_test=img[:4], y_test=y[:4])
    np.savez(tmp / "onehot.npz", x_train=x, y_train=np.eye(3)[y], x_test=x[:4], y_test=np.eye(3)[y[:4]])
    return {"nan": tmp / "nan.npz", "chw": tmp / "chw.npz", "onehot": tmp / "onehot.npz"}


def _subs(tmp):
    return {"tmp": tmp, "corrupt": _corrupt_npz(tmp), "file": _a_file(tmp), **_bad_npz(tmp)}


BAD_INPUTS = {
    "unknown group option": (["model=fcn4"], "Could not find 'model/fcn4'"),
    "wrong type": (["optimizer.lr=abc"], "optimizer.lr=abc"),
    "wrong type (int)": (["trainer.max_steps=ten"], "trainer.max_steps"),
    "unknown key": (["optimizer.momentun=0.9"], "momentun"),
    "negative learning rate": (["optimizer.lr=-0.1"], "optimizer.lr must be a positive number"),
    "zero learning rate": (["optimizer.lr=0"], "optimizer.lr must be a positive number"),
    "unknown W&B mode": (["logger=wandb", "logger.wandb.mode=cloud"], "logger.wandb.mode must be offline or online"),
    "unknown option in a list": (
        ["logger=[tensorboard,mlfow]"],
        "logger': mlflow, none, tensorboard, wandb (did you mean mlflow?)",
    ),
    "zero batch size": (["optimizer=sgd", "optimizer.batch_size=0"], "optimizer.batch_size must be positive"),
    "batch larger than data": (["optimizer=sgd", "optimizer.batch_size=5000"], "larger than the 1437 training"),
    "n_train larger than data": (["dataset.n_train=5000"], "dataset.n_train=5000 is larger than the 1437"),
    "gd with a batch size": (["optimizer.batch_size=64"], "optimizer=gd is full batch"),
    "missing torchvision files": (["dataset=cifar10", "dataset.data_dir={tmp}"], "cifar-10-batches-py"),
    "npz without a path": (["dataset=npz"], "dataset=npz needs dataset.path"),
    "corrupt npz": (["dataset=npz", "dataset.path={corrupt}"], "not a readable .npz"),
    "unwritable output dir": (["hydra.run.dir={file}/run"], "a_file"),
    "unknown metric name": (["metrics.names=[sharpnesss]"], "unknown metric name(s) in metrics.names: sharpnesss"),
    "label smoothing out of range": (["regularizer.label_smoothing=1.5"], "regularizer.label_smoothing"),
    "conv model on vectors": (["model=cnn6", "dataset=mnist1d"], "needs image inputs"),
    "augment on vectors": (["regularizer=augment", "dataset=synthetic"], "augment needs image inputs"),
    "milestones out of order": (["schedule=step", "schedule.milestones=[0.8,0.3]"], "schedule.milestones"),
    "wrong enum value": (["loss.name=hinge"], "hinge"),
    "negative weight decay": (["optimizer.weight_decay=-1"], "optimizer.weight_decay must be >= 0"),
    "empty probe set": (["probe.n=0"], "probe.n must be >= 1"),
    "lanczos tolerance out of range": (["metrics.lanczos_tol=2"], "metrics.lanczos_tol must be in (0, 1)"),
    "sharpness_k neither a count nor auto": (["metrics.sharpness_k=top"], "must be a positive integer or auto"),
    "a block without a fresh direction": (["metrics.lanczos_block_extra=0"], "a block needs a fresh direction"),
    "unknown metric cadence key": (["+metrics.every.sharpnes=5"], "metrics.every has unknown key"),
    "ejr_sam with sam": (["regularizer=ejr_sam", "optimizer=sam"], "both perturb the weights"),
    "mu_reg without ejr_v2": (
        ["regularizer=ejr_sam", "regularizer.mu_reg=0.1"],
        "regularizer.mu_reg=0.1 is used only by regularizer=ejr_v2",
    ),
    "lambda_reg without ejr": (["regularizer.lambda_reg=0.01"], "used only by regularizer=ejr but"),
    "negative lambda_reg": (["regularizer=ejr", "regularizer.lambda_reg=-1"], "regularizer.lambda_reg must be >= 0"),
    "unknown jacobian regularizer": (["regularizer.jacobian=ejr3"], "ejr3"),
    # names are enums, and a field that only another option reads is refused (it would be silently ignored)
    "unknown dataset name": (["dataset.name=cifar11"], "Invalid value 'cifar11', expected one of [digits,"),
    "unknown model name": (["model.name=resnet21"], "Invalid value 'resnet21', expected one of [fcn3,"),
    "rho without sam": (
        ["optimizer=sgd", "optimizer.rho=0.5"],
        "optimizer.rho=0.5 is used only by optimizer=sam but optimizer.name=sgd",
    ),
    "depth without wrn": (["model=cnn6", "model.depth=3"], "model.depth=3 is used only by model=wrn"),
    "synthetic field on digits": (
        ["dataset.num_classes=3"],
        "dataset.num_classes=3 is used only by dataset=synthetic but dataset.name=digits",
    ),
    "widths without fcn3": (["model=cnn6", "model.widths=[8]"], "model.widths=[8] is used only by model=fcn3"),
    "dropout without vgg11": (["model.dropout=0.5"], "model.dropout=0.5 is used only by model=vgg11"),
    "batch_norm where the model has none": (
        ["model.batch_norm=true"],
        "model.batch_norm=true is used only by model=vgg11 or resnet20",
    ),
    "target_scale without mse": (["loss=ce", "loss.target_scale=2"], "loss.target_scale=2.0 is used only by loss=mse"),
    "milestones without step": (
        ["schedule.milestones=[0.5]"],
        "schedule.milestones=[0.5] is used only by schedule=step",
    ),
    "npz path without npz": (["dataset.path=x.npz"], "dataset.path=x.npz is used only by dataset=npz"),
    # sizes the architecture or the synthetic task cannot take, known before anything is built
    "wrn depth not 6n+4": (["model=wrn", "model.depth=27"], "model.depth=27: a WRN depth must be 6n+4"),
    "no hidden layer": (["model.widths=[]"], "model.widths must be a non-empty list of positive widths"),
    "one synthetic class": (["dataset=synthetic", "dataset.num_classes=1"], "dataset=synthetic needs num_classes >= 2"),
    # bad data content: refused before training (not recorded as DIVERGED, not trained in the wrong layout)
    "NaN in the inputs": (
        ["dataset=npz", "dataset.path={nan}"],
        "x_train holds NaN or inf in 1 example(s) (first: index 3)",
    ),
    "channel-first uint8 images": (["dataset=npz", "dataset.path={chw}", "model=cnn6"], "save x.transpose(0, 2, 3, 1)"),
    "one-hot labels": (["dataset=npz", "dataset.path={onehot}"], "labels must be class indices of shape (N,)"),
    # contradictions and typos: refused with the closest valid name
    "download with npz": (
        ["dataset=npz", "dataset.path=x.npz", "dataset.download=true"],
        "dataset.download=true is used only",
    ),
    "two jacobian regularizers": (["regularizer=[ejr_sam,ejr_v2]"], "ejr_sam and ejr_v2 both set regularizer.jacobian"),
    "added unknown key": (
        ["+optimizer.lrr=0.1"],
        "optimizer.lrr is not a field of optimizer (did you mean optimizer.lr?)",
    ),
    "added unknown top-level key": (["+sed=1"], "sed is not a field of the config (did you mean seed?)"),
    "misspelt key": (["optimizer.momentun=0.9"], "(did you mean optimizer.momentum?)"),
    "misspelt group": (["optimiser=sgd"], "(did you mean optimizer?)"),
    "misspelt option": (["optimizer=sdg"], "Available options in 'optimizer': gd, sam, sgd (did you mean sgd?)"),
    "misspelt launcher": (["launcher=slurmm"], "(did you mean slurm?)"),
    "misspelt metric name": (["metrics.names=[sharpnes]"], "sharpnes (did you mean sharpness?)"),
}

# Every case but these two is known before any data is read, so ijr-sweep's pre-flight refuses it too.
NEEDS_THE_RUN = (
    "corrupt npz",
    "unwritable output dir",
    "NaN in the inputs",
    "channel-first uint8 images",
    "one-hot labels",
    "misspelt launcher",  # (ijr-sweep takes the launcher apart from the jobs: tested in test_sweeps)
)


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=lambda c: c.replace(" ", "-"))
def test_bad_input_one_line_exit_2_nothing_half_written(tmp_path, case):
    args, expected = BAD_INPUTS[case]
    args = [a.format(**_subs(tmp_path)) for a in args]
    run_dir = tmp_path / "run"
    if not any(a.startswith("hydra.run.dir") for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    r = run_cli(args + ["trainer.max_steps=2"])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("ijr-train: error: "), r.stderr
    assert expected in lines[0] and "Traceback" not in r.stderr
    assert not run_dir.exists()  # nothing half-written, nothing left RUNNING


@pytest.mark.parametrize("case", [c for c in BAD_INPUTS if c not in NEEDS_THE_RUN], ids=lambda c: c.replace(" ", "-"))
def test_the_sweep_preflight_refuses_the_same_bad_input_in_one_line(tmp_path, case, capsys):
    """ijr-sweep --dry-run runs exactly ijr-train's checks on every job: one line naming the job, exit 2."""
    from ijr_cli.cli import sweep as sweep_cli

    args, expected = BAD_INPUTS[case]
    subs = _subs(tmp_path)
    study = tmp_path / "study.yaml"
    study.write_text(
        "description: d\nreference: r\nfixed: [trainer.max_steps=2]\ngrids: [{optimizer.lr: [0.05]}]\nseeds: [0]\n"
    )
    overrides = [a.format(**subs) for a in args]
    with pytest.raises(SystemExit) as exc:
        sweep_cli.sweep([str(study), "--dry-run", "--sweep-dir", str(tmp_path / "s"), *overrides])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("ijr-sweep: error: job ") and expected in lines[0], lines[0]
    assert not (tmp_path / "s").exists()


def test_cuda_requested_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = run_cli(["trainer.device=cuda", f"hydra.run.dir={tmp_path / 'run'}"])
    assert r.returncode == 2 and "CUDA is not available" in r.stderr and not (tmp_path / "run").exists()


def test_full_error_shows_the_trace(tmp_path):
    r = subprocess.run(
        [IJR_TRAIN, "optimizer.lr=-1", f"hydra.run.dir={tmp_path / 'r'}"],
        capture_output=True,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "UserError" in r.stderr


def test_diverged_run_exits_zero(tmp_path):
    r = run_cli([*TINY, "loss=mse", "optimizer.lr=1e5", f"hydra.run.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr
    assert "DIVERGED" in r.stdout and json.loads((tmp_path / "status.json").read_text())["status"] == "DIVERGED"


def _strip(path):
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # no wall-clock values


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_mid_run_then_resume_is_identical(tmp_path, sig):
    """A run killed mid-way (SIGKILL: no chance to react; SIGTERM: stops at the next step with a checkpoint of
    it, marked STOPPED) and resumed by the same command ends with the metrics of an uninterrupted run."""
    args = [
        *TINY,
        "trainer.max_steps=3000",
        "trainer.eval_every=50",
        "trainer.checkpoint_every=100",
        "optimizer.momentum=0.9",
        "regularizer=label_smoothing",
    ]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_cli(args + [f"hydra.run.dir={whole}"]).returncode == 0
    proc = subprocess.Popen(
        [IJR_TRAIN, *args, f"hydra.run.dir={cut}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.time() + 120
    while not (cut / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(0.05)
    os.kill(proc.pid, sig)
    stderr = proc.communicate(timeout=60)[1]
    status = json.loads((cut / "status.json").read_text())
    if sig == signal.SIGKILL:
        assert status["status"] == "RUNNING"  # killed mid-way: nobody could mark it
    else:
        stopped = status["attempts"][0]["stopped_at_step"]
        assert proc.returncode == 143 and status["status"] == "STOPPED", stderr
        assert status["error"] == f"stopped by signal SIGTERM at step {stopped} (checkpoint saved)"
        assert torch.load(cut / "checkpoint.pt", weights_only=False)["step"] == stopped
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "resumes it from its last checkpoint" in lines[0] and "Traceback" not in stderr
    killed_rows = len((cut / "metrics.jsonl").read_text().splitlines())
    assert killed_rows < len(_strip(whole / "metrics.jsonl"))
    r = run_cli(args + [f"hydra.run.dir={cut}"])
    assert r.returncode == 0, r.stderr
    status = json.loads((cut / "status.json").read_text())
    assert status["status"] == "COMPLETED" and len(status["attempts"]) == 2
    assert status["attempts"][1]["resumed_from_step"] > 0
    if sig == signal.SIGTERM:
        assert status["attempts"][1]["resumed_from_step"] == stopped
    assert _strip(cut / "metrics.jsonl") == _strip(whole / "metrics.jsonl")
    s_whole, s_cut = (json.loads((d / "summary.json").read_text()) for d in (whole, cut))
    assert {k: v for k, v in s_whole.items() if not k.endswith("_s")} == {
        k: v for k, v in s_cut.items() if not k.endswith("_s")
    }
    again = run_cli(args + [f"hydra.run.dir={cut}"])
    assert again.returncode == 0 and "already COMPLETED" in again.stdout


def test_a_failing_job_does_not_stop_the_multirun(tmp_path, monkeypatch, capsys):
    """In-process multirun: one job crashes (a bug), one has bad input; the third still runs; exit code 1 and
    each failure named with its overrides at the end."""
    from ijr_cli.cli import train as cli
    from ijr_cli.run import experiment

    real_run = experiment.run

    def run(cfg, **kwargs):
        if cfg.seed == 1:
            raise RuntimeError("boom")
        return real_run(cfg, **kwargs)

    monkeypatch.setattr(experiment, "run", run)
    monkeypatch.setattr(cli, "FAILED_JOBS", [])
    argv = [
        "ijr-train",
        "-m",
        *TINY,
        "trainer.max_steps=2",
        "metrics=none",
        "seed=0,1,2",
        "optimizer.batch_size=32,5000",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweep.subdir=${hydra.job.num}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.train()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "4 job(s) of the multirun failed" in err  # seed 1 twice, batch 5000 for seeds 0 and 2
    summary = err[err.index("4 job(s) of the multirun failed") :]
    # both seed-1 jobs are listed by their overrides; their identical error is printed once, with the count
    assert summary.count("seed=1: RuntimeError: boom [2 jobs]") == 1 and summary.count("RuntimeError: boom") == 1
    assert summary.count("seed=1: the same error") == 1 and "Traceback" in err
    assert "optimizer.batch_size=5000 optimizer.lr=0.05" in summary
    assert "seed=0: optimizer.batch_size=5000 is larger than the 256" in summary
    done = sorted(json.loads(p.read_text())["status"] for p in tmp_path.glob("*/status.json"))
    # seeds 0 and 2 at batch 32 ran; the crashes are FAILED with their traceback, the refused jobs (batch 5000)
    # FAILED with the reason and nothing else in their directory
    assert done == ["COMPLETED", "COMPLETED", "FAILED", "FAILED", "FAILED", "FAILED"]
    for status_path in tmp_path.glob("*/status.json"):
        status = json.loads(status_path.read_text())
        if "is larger than the 256" in (status.get("error") or ""):
            assert sorted(p.name for p in status_path.parent.iterdir() if p.name != ".hydra") == [
                "overrides.yaml",
                "status.json",
            ]
            assert "optimizer.batch_size=5000" in (status_path.parent / "overrides.yaml").read_text()
