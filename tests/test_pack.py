"""Packed runs (issue 16): every member of a pack equals its sequential run.

float64, tiny models: the parameters after 50 steps of every training variant to 1e-10 relative, every logged
metric to 1e-8; a member diverging leaves the others bit-identical to a pack without it; a stopped pack resumes
exactly, and a member's checkpoint resumes as an ordinary run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

TINY = [
    "dataset=synthetic",
    "dataset.num_train_examples=64",
    "dataset.num_test_examples=32",
    "dataset.input_shape=[1,8,8]",
    "dataset.num_classes=4",
    "model=fcn3",
    "model.widths=[12,10]",
    "trainer.dtype=float64",
    "trainer.device=cpu",
    "trainer.progress=false",
    "metrics=none",
]
SGD = ["optimizer=sgd", "optimizer.batch_size=16"]
# variant -> (shared overrides, three members' own overrides: different hyperparameters and seeds)
VARIANTS = {
    "gd": (["optimizer=gd"], [["optimizer.lr=0.1"], ["optimizer.lr=0.05", "seed=1"], ["optimizer.lr=0.2", "seed=2"]]),
    "sgd": (SGD, [["optimizer.lr=0.1"], ["optimizer.lr=0.05", "seed=1"], ["optimizer.lr=0.2", "seed=2"]]),
    "momentum_weight_decay": (
        SGD + ["optimizer.momentum=0.9"],
        [["optimizer.weight_decay=0.01"], ["seed=1", "optimizer.momentum=0.5"], ["seed=2", "optimizer.momentum=0"]],
    ),
    "nesterov": (
        SGD + ["optimizer.momentum=0.9", "optimizer.nesterov=true"],
        [["optimizer.lr=0.1"], ["seed=1", "optimizer.momentum=0.5"], ["seed=2", "optimizer.weight_decay=0.01"]],
    ),
    "cosine_schedule": (
        SGD + ["schedule=cosine", "schedule.warmup_steps=5"],
        [["schedule.min_lr_factor=0.1"], ["seed=1"], ["seed=2", "optimizer.lr=0.3"]],
    ),
    "label_smoothing": (
        SGD + ["regularizer=label_smoothing"],
        [["regularizer.label_smoothing=0.1"], ["seed=1", "regularizer.label_smoothing=0"], ["seed=2"]],
    ),
    "mixup": (
        SGD + ["regularizer=mixup"],
        [
            ["regularizer.mixup_alpha=0.2"],
            ["seed=1", "regularizer.mixup_alpha=1.0"],
            ["seed=2", "regularizer.mixup_alpha=0"],
        ],
    ),
    "augment": (SGD + ["regularizer=augment", "model=cnn6"], [[], ["seed=1"], ["seed=2", "optimizer.lr=0.05"]]),
    "sam": (
        ["optimizer=sam", "optimizer.batch_size=16"],
        [["optimizer.rho=0.05"], ["seed=1", "optimizer.rho=0.1"], ["seed=2", "optimizer.rho=0.0"]],
    ),
    "ejr": (
        SGD + ["regularizer=ejr"],
        [["regularizer.lambda_reg=0.01"], ["seed=1", "regularizer.lambda_reg=0.1"], ["seed=2"]],
    ),
    "ejr_chunked": (
        SGD + ["regularizer=ejr", "trainer.grad_chunk=6"],
        [["regularizer.lambda_reg=0.01"], ["seed=1", "regularizer.lambda_reg=0.1"], ["seed=2"]],
    ),
    "ejr_sam": (
        SGD + ["regularizer=ejr_sam"],
        [["regularizer.rho_reg=0.5"], ["seed=1", "regularizer.rho_reg=2"], ["seed=2"]],
    ),
    "ejr_v2": (
        SGD + ["regularizer=ejr_v2"],
        [["regularizer.mu_reg=0.03"], ["seed=1", "regularizer.mu_reg=0.1", "regularizer.rho_reg=1"], ["seed=2"]],
    ),
    "mse_target_scale": (
        ["optimizer=gd", "loss=mse"],
        [["loss.target_scale=1"], ["seed=1", "loss.target_scale=2"], ["seed=2", "dataset.input_scale=0.5"]],
    ),
}


def _configs(compose, overrides_list):
    from omegaconf import OmegaConf

    return [OmegaConf.to_object(compose(o)) for o in overrides_list]


@pytest.mark.parametrize(
    "variant", [pytest.param(v, marks=pytest.mark.slow) if v == "augment" else v for v in sorted(VARIANTS)]
)  # (augment trains cnn6: 10 s, in make test-slow)
def test_a_packed_step_is_each_members_sequential_step(compose, variant):
    """50 steps of K=3 members with different hyperparameters and seeds, packed, equal their sequential runs."""
    import torch

    from ijr_cli.curvature.params import flat_parameters
    from ijr_cli.run.build import build
    from ijr_cli.run.experiment import lr_schedule
    from ijr_cli.stack import ModelStack
    from ijr_cli.train.packed import PackedSpec, StackedSGD, packed_train_step
    from ijr_cli.train.step import train_step

    shared, members = VARIANTS[variant]
    cfgs = _configs(compose, [TINY + shared + m for m in members])
    expected = []
    for cfg in cfgs:
        b = build(cfg)
        lr_at = lr_schedule(cfg, b.total_steps)
        for s in range(50):
            for group in b.state.optimizer.param_groups:
                group["lr"] = lr_at(s)
            train_step(b.state.model, b.state.optimizer, b.data, s, b.spec)
        expected.append(flat_parameters(b.state.model))
    bs = [build(cfg) for cfg in cfgs]
    stack = ModelStack([b.state.model for b in bs])
    spec = PackedSpec.of([b.spec for b in bs], [b.data for b in bs], "cpu", torch.float64)
    o = [c.optimizer for c in cfgs]
    sgd = StackedSGD(stack, [x.momentum for x in o], [x.weight_decay for x in o], o[0].nesterov)
    lrs = [lr_schedule(cfg, b.total_steps) for cfg, b in zip(cfgs, bs)]
    active = torch.ones(3, dtype=torch.float64)
    for s in range(50):
        packed_train_step(stack, sgd, s, spec, torch.tensor([lr(s) for lr in lrs], dtype=torch.float64), active)
    got = stack.flat()
    for k in range(3):
        assert float(torch.linalg.vector_norm(got[k] - expected[k]) / torch.linalg.vector_norm(expected[k])) < 1e-10
        assert torch.equal(flat_parameters(bs[k].state.model), got[k])  # the member's own model is a view of it
    assert not torch.equal(got[0], got[1])


def _pack_and_sequential(compose, tmp_path: Path, shared, members, sequential=True):
    from omegaconf import OmegaConf

    from ijr_cli.run import experiment
    from ijr_cli.run.pack import PackJob, run_pack

    jobs = []
    for i, own in enumerate(members):
        cfg = compose(TINY + shared + own)
        yaml = OmegaConf.to_yaml(cfg, resolve=True)
        jobs.append(PackJob(OmegaConf.to_object(cfg), tmp_path / "pack" / str(i), yaml, own))
        if sequential:
            experiment.run(OmegaConf.to_object(cfg), run_dir=tmp_path / "seq" / str(i), config_yaml=yaml, overrides=own)
    assert run_pack(jobs, "test") == {}
    return jobs


def rows(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_rows_close(a, b, rel=1e-8):
    """Every logged metric (not the wall times) equal, floats to `rel` relative (1e-12 absolute near 0)."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for key, va in ra.items():
            if key.endswith("_s"):
                continue
            vb = rb[key]
            if isinstance(va, float) and isinstance(vb, float):
                if math.isnan(va):
                    assert math.isnan(vb), key
                else:
                    assert abs(va - vb) <= rel * abs(va) + 1e-12, (ra["step"], key, va, vb)
            elif isinstance(va, list):
                assert len(va) == len(vb) and all(abs(x - y) <= rel * abs(x) + 1e-12 for x, y in zip(va, vb)), key
            else:
                assert va == vb, (key, va, vb)


RUN = ["trainer.max_steps=50", "trainer.eval_every=10", "trainer.checkpoint_every=20", "metrics.default_every=5"]
LRS = [["optimizer.lr=0.1"], ["optimizer.lr=0.3", "seed=1"], ["optimizer.lr=0.05", "seed=2"]]


@pytest.mark.parametrize(
    "shared",
    [
        ["optimizer=gd", "metrics=eos"],
        ["optimizer=gd", "metrics=full", "metrics.sharpness_k=auto"],
        SGD + ["optimizer.momentum=0.9", "regularizer=ejr", "regularizer.lambda_reg=0.01", "metrics=eos"],
        ["optimizer=sam", "optimizer.batch_size=16", "loss=mse", "metrics=eos", "metrics.sharpness_k=3"],
    ],
    ids=["gd-eos", "gd-full-auto", "ejr-momentum-eos", "sam-mse-top3"],
)
def test_every_logged_metric_of_a_member_is_its_sequential_runs(compose, tmp_path, shared):
    from ijr_cli.core.status import read_status

    _pack_and_sequential(compose, tmp_path, RUN + shared, LRS)
    for i in range(3):
        assert_rows_close(rows(tmp_path / "seq" / str(i)), rows(tmp_path / "pack" / str(i)))
        status = read_status(tmp_path / "pack" / str(i) / "status.json")
        assert status.status == "COMPLETED" and status.facts["pack"] == {"name": "test", "slot": i, "size": 3}
        summary = json.loads((tmp_path / "pack" / str(i) / "summary.json").read_text())
        assert summary["steps"] == 50 and summary["status"] == "COMPLETED"


def test_a_diverging_member_leaves_the_others_bit_identical(compose, tmp_path):
    """Member 1 (lr 40) diverges; members 0 and 2 log exactly the rows of a pack without it."""
    from ijr_cli.core.status import read_status

    shared = RUN + ["optimizer=gd", "metrics=eos", "trainer.sync_every=5"]
    members = [LRS[0], ["optimizer.lr=40", "seed=1"], LRS[2]]
    _pack_and_sequential(compose, tmp_path / "with", shared, members, sequential=False)
    _pack_and_sequential(compose, tmp_path / "without", shared, [LRS[0], LRS[2]], sequential=False)
    status = read_status(tmp_path / "with" / "pack" / "1" / "status.json")
    assert status.status == "DIVERGED"
    for with_i, without_i in ((0, 0), (2, 1)):
        a, b = rows(tmp_path / "with" / "pack" / str(with_i)), rows(tmp_path / "without" / "pack" / str(without_i))
        strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rs]  # noqa: E731
        assert strip(a) == strip(b)
    # the diverged member's rows are those of its sequential run
    from omegaconf import OmegaConf

    from ijr_cli.run import experiment

    cfg = compose(TINY + shared + members[1])
    experiment.run(
        OmegaConf.to_object(cfg),
        run_dir=tmp_path / "seq1",
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        overrides=[],
    )
    assert_rows_close(rows(tmp_path / "seq1"), rows(tmp_path / "with" / "pack" / "1"))
    assert read_status(tmp_path / "seq1" / "status.json").status == "DIVERGED"


def test_a_stopped_pack_resumes_exactly_and_a_members_checkpoint_resumes_alone(compose, tmp_path, monkeypatch):
    """A stop request at step 30: every member checkpoints; the same pack resumes them to the rows of an
    uninterrupted pack; a member's run directory also resumes as an ordinary ijr-train run."""
    from omegaconf import OmegaConf

    from ijr_cli.core.errors import Terminated
    from ijr_cli.core.status import read_status
    from ijr_cli.run import experiment
    from ijr_cli.run.pack import PackJob, run_pack
    from ijr_cli.run.signals import StopSignals

    shared = RUN + SGD + ["optimizer.momentum=0.9", "metrics=eos"]
    _pack_and_sequential(compose, tmp_path / "whole", shared, LRS, sequential=False)
    calls = {"n": 0}

    def stop_at_30(self):
        calls["n"] += 1
        return "signal SIGTERM" if calls["n"] == 30 else None

    jobs = []
    for i, own in enumerate(LRS):
        cfg = compose(TINY + shared + own)
        jobs.append(
            PackJob(OmegaConf.to_object(cfg), tmp_path / "stopped" / str(i), OmegaConf.to_yaml(cfg, resolve=True), own)
        )
    monkeypatch.setattr(StopSignals, "requested", stop_at_30)
    with pytest.raises(Terminated):
        run_pack(jobs, "test")
    monkeypatch.undo()
    for i in range(3):
        assert read_status(tmp_path / "stopped" / str(i) / "status.json").status == "STOPPED"
    job = jobs[1]  # member 1 alone, as ijr-train would resume it
    experiment.run(job.cfg, run_dir=job.run_dir, config_yaml=job.config_yaml, overrides=job.overrides)
    assert run_pack(jobs, "test") == {}  # the others as a pack (member 1 is COMPLETED: skipped)
    for i in range(3):
        assert_rows_close(rows(tmp_path / "whole" / "pack" / str(i)), rows(tmp_path / "stopped" / str(i)), rel=1e-12)
        assert read_status(tmp_path / "stopped" / str(i) / "status.json").status == "COMPLETED"


@pytest.mark.slow
def test_a_packed_sweep_reports_what_the_unpacked_sweep_reports(tmp_path):
    """ijr-sweep --pack 3 (float32, 30 steps of fc-tanh on digits with the sharpness): the dry run lists the packs,
    each member is an ordinary run in the sweep, and ijr-report's table equals the unpacked sweep's to 1e-4."""
    import pandas as pd
    from helpers import cli

    dry = cli("ijr-sweep", ["eos_lr", "--tiny", "--pack", "3", "--dry-run", "--sweep-dir", tmp_path / "p"])
    assert dry.returncode == 0, dry.stderr
    assert "packs: 2 pack(s) of 4 job(s)" in dry.stdout and "pack-0001: 1 job(s)" in dry.stdout
    for name, extra in (("p", ["--pack", "3"]), ("u", [])):
        done = cli("ijr-sweep", ["eos_lr", "--tiny", *extra, "--sweep-dir", tmp_path / name], timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "COMPLETED 4" in done.stdout
        report = cli("ijr-report", [tmp_path / name, "--no-figures", "--out", tmp_path / f"{name}-report"])
        assert report.returncode == 0, report.stderr
    packed, unpacked = (pd.read_csv(tmp_path / f"{n}-report" / "runs.csv") for n in ("p", "u"))
    packed, unpacked = (t.sort_values("run").reset_index(drop=True) for t in (packed, unpacked))
    for column in ("train_loss", "test_acc", "sharpness", "threshold", "impurity_mean", "batch_loss"):
        assert ((packed[column] - unpacked[column]).abs() <= 1e-4 * unpacked[column].abs() + 1e-6).all(), column
    status = json.loads((tmp_path / "p" / "optimizer.lr=0.1,seed=0" / "status.json").read_text())
    assert status["pack"]["size"] == 3 and status["status"] == "COMPLETED"


@pytest.mark.slow
def test_a_pack_killed_with_sigkill_resumes_to_the_metrics_of_an_uninterrupted_pack(tmp_path):
    """kill -9 of the pack's process mid-way (no chance to react: its members stay RUNNING), then the same
    ijr-sweep command: every member resumes from its own checkpoint and ends with the rows of an uninterrupted pack."""
    import os
    import signal
    import subprocess
    import time

    from helpers import IJR_SWEEP, ROOT, cli

    study = tmp_path / "three.yaml"
    fixed = TINY + ["optimizer=sgd", "optimizer.batch_size=16", "optimizer.momentum=0.9", "metrics=eos"]
    fixed += ["trainer.max_steps=2000", "trainer.eval_every=50", "trainer.checkpoint_every=100"]
    fixed += ["+metrics.every.sharpness=100"]
    study.write_text(
        "description: three jobs\nreference: test\n"
        f"fixed: {json.dumps(fixed)}\ngrids: [{{optimizer.lr: [0.01, 0.02, 0.05]}}]\nseeds: [0]\n"
    )
    whole = cli("ijr-sweep", [study, "--pack", "3", "--sweep-dir", tmp_path / "whole"], timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    cut = tmp_path / "cut"
    cmd = [IJR_SWEEP, str(study), "--pack", "3", "--sweep-dir", str(cut)]
    sweep = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    member = cut / "optimizer.lr=0.02,seed=0"
    deadline = time.time() + 300
    while not (member / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.005)
    pid = json.loads((member / "status.json").read_text())["attempts"][-1]["pid"]
    os.kill(pid, signal.SIGKILL)
    sweep.wait(timeout=60)
    statuses = {d.name: json.loads((d / "status.json").read_text())["status"] for d in cut.glob("optimizer.lr=*")}
    assert set(statuses.values()) == {"RUNNING"}, statuses  # killed: nobody could mark them
    again = cli("ijr-sweep", [study, "--pack", "3", "--sweep-dir", cut], timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 job(s): 3 to run (0 new, 3 to resume)" in again.stdout, again.stdout
    resumed = []
    for run in (tmp_path / "whole").glob("optimizer.lr=*"):
        status = json.loads((cut / run.name / "status.json").read_text())
        assert status["status"] == "COMPLETED"
        # (killed between two members' checkpoint writes, a member without one starts again from step 0: members
        # resumed from different steps are packed by step)
        resumed.append(status["attempts"][-1]["resumed_from_step"])
        # (to rounding: a member that started again alone ran as an ordinary run, not in the pack)
        assert_rows_close(rows(run), rows(cut / run.name), rel=1e-9)
    assert json.loads((member / "status.json").read_text())["attempts"][-1]["resumed_from_step"] >= 100
    assert all(r is None or r >= 100 for r in resumed), resumed


def test_the_members_solver_gives_each_member_what_it_would_get_alone(float64):
    """lanczos_top_members on K block-diagonal operators (different spectra, k, tolerances and warm starts): each
    member's eigenpairs, residuals and product count are those of lanczos_top on its own operator; a member that
    converges early stops while the others go on."""
    import torch

    from ijr_cli.curvature.lanczos import lanczos_top, lanczos_top_members

    dim, gen = 200, torch.Generator().manual_seed(0)
    mats = []
    for scale, top in ((1.0, 30.0), (10.0, 3.01), (0.01, 3.2)):  # a wide gap converges fast, a narrow one slowly
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen))
        spectrum = torch.linspace(-1, 3, dim)
        spectrum[-1] = top
        mats.append(q @ torch.diag(spectrum * scale) @ q.T)
    stacked = torch.stack(mats)
    warm = torch.randn(dim, 2, generator=gen)

    def settings():  # (fresh generators each time: both solvers draw the same start directions)
        return {
            0: dict(k=1, tol=1e-6, v0=None, generator=torch.Generator().manual_seed(1)),
            1: dict(k=3, tol=1e-8, v0=warm, generator=torch.Generator().manual_seed(2)),
            2: dict(k=2, tol=1e-3, v0=None, generator=torch.Generator().manual_seed(3)),
        }

    alone = {i: lanczos_top(lambda v, a=mats[i]: a @ v, dim, dtype=torch.float64, **s) for i, s in settings().items()}
    products = lambda v: torch.einsum("kij,kj->ki", stacked, v)  # noqa: E731
    together = lanczos_top_members(products, 3, dim, settings(), "cpu", torch.float64)
    for i in alone:
        a, b = alone[i], together[i]
        assert a.num_products == b.num_products
        assert torch.allclose(a.eigenvalues, b.eigenvalues, rtol=1e-12, atol=0)
        assert torch.allclose(a.residuals, b.residuals, rtol=1e-6, atol=1e-14)
    assert len({r.num_products for r in together.values()}) > 1  # members stopped on their own residuals


@pytest.mark.parametrize("value", ["0", "many", "-2"])
def test_a_bad_pack_size_is_one_line_and_nothing_launched(tmp_path, value):
    from helpers import cli

    r = cli("ijr-sweep", ["eos_lr", "--tiny", "--pack", value, "--sweep-dir", tmp_path / "s"])
    assert r.returncode == 2
    assert r.stderr.strip() == f"ijr-sweep: error: --pack must be a positive integer or auto, got {value!r}"
    assert not (tmp_path / "s").exists()


def test_pack_auto_trains_as_many_members_at_once_as_fit_the_free_memory(compose, tmp_path, monkeypatch):
    """--pack auto: with free memory for two members (by `member_bytes`), three members train as a pack of two and
    an ordinary run of one, each ending with its sequential run's rows."""
    from omegaconf import OmegaConf

    from ijr_cli.core.status import read_status
    from ijr_cli.run import pack
    from ijr_cli.run.build import build

    shared = RUN + ["optimizer=gd", "metrics=eos"]
    cfgs = [compose(TINY + shared + own) for own in LRS]
    per_member = pack.member_bytes(build(OmegaConf.to_object(cfgs[0])))
    assert per_member > 0
    monkeypatch.setattr(pack, "available_bytes", lambda device: int(2.5 * per_member / pack.MEMORY_MARGIN))
    jobs = [
        pack.PackJob(OmegaConf.to_object(c), tmp_path / "auto" / str(i), OmegaConf.to_yaml(c, resolve=True), own)
        for i, (c, own) in enumerate(zip(cfgs, LRS))
    ]
    assert pack.run_pack(jobs, "auto", size="auto") == {}
    packed = [read_status(tmp_path / "auto" / str(i) / "status.json").facts.get("pack") for i in range(3)]
    assert packed[0] == {"name": "auto", "slot": 0, "size": 3} and packed[1]["slot"] == 1 and packed[2] is None
    _pack_and_sequential(compose, tmp_path / "ref", shared, LRS)
    for i in range(3):
        assert_rows_close(rows(tmp_path / "ref" / "seq" / str(i)), rows(tmp_path / "auto" / str(i)))
