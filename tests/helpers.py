"""Shared test scaffolding: tiny models and data, the library's parts with the schema's defaults, a run in-process,
a CLI as a subprocess, and synthetic sweep directories for the report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
BIN = Path(sys.executable).parent
IJR_TRAIN, IJR_SWEEP, IJR_STATUS, IJR_REPORT = (
    str(BIN / c) for c in ("ijr-train", "ijr-sweep", "ijr-status", "ijr-report")
)


# A tiny, fast configuration for CLI tests (and bench/loggers.py) (a Gaussian-mixture task, a small MLP).
TINY = [
    "dataset=synthetic",
    "dataset.num_train_examples=256",
    "dataset.num_test_examples=128",
    "dataset.input_shape=[10]",
    "dataset.num_classes=4",
    "model.widths=[16]",
    "loss=ce",
    "optimizer=sgd",
    "optimizer.batch_size=32",
    "optimizer.lr=0.05",
    "trainer.max_steps=40",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=20",
    "trainer.progress=false",
]


def cli(command: str, args, *, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    """Run one of ijr's commands (`ijr-train`, `ijr-sweep`, `ijr-status`, `ijr-report`) as a user would: text
    output captured, HYDRA_FULL_ERROR unset, from the repository root unless `cwd` says otherwise."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [str(BIN / command), *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def measurer(model, data, objective, names, **settings):
    """A Measurer with the schema's defaults for metrics.* and probe.* (what a run without overrides uses)."""
    from ijr_cli.core.config import MetricsConfig, OptimizerConfig, ProbeConfig
    from ijr_cli.curvature.params import flat_parameters
    from ijr_cli.measure.measurer import Measurer
    from ijr_cli.run.build import measurer_settings

    defaults = dict(
        init_params=flat_parameters(model).clone(),
        **measurer_settings(MetricsConfig(), ProbeConfig(), OptimizerConfig(), seed=0),
    )
    return Measurer(model=model, data=data, objective=objective, names=list(names), **{**defaults, **settings})


# ------------------------------------------------------------------------------------------ tiny models and data
def tiny_mlp(seed=0, d=4, h=5, c=3, act=None, batch_norm=False):
    """Linear(d, h), [BatchNorm1d(h)], act (tanh), Linear(h, c), initialised from `seed`."""
    import torch

    torch.manual_seed(seed)
    layers = [torch.nn.Linear(d, h)] + ([torch.nn.BatchNorm1d(h)] if batch_norm else [])
    return torch.nn.Sequential(*layers, (act or torch.nn.Tanh)(), torch.nn.Linear(h, c))


def tiny_data(n=11, d=4, c=3, seed=1):
    """n Gaussian inputs of dimension d (or shape d) and labels in range(c)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shape = (n, *d) if isinstance(d, tuple) else (n, d)
    return torch.randn(*shape, generator=g), torch.randint(0, c, (n,), generator=g)


def tiny_dataset(n, d, c):
    """tiny_data as a Dataset (its first two examples are the test set), for the training-step tests."""
    from ijr_cli.data import Dataset

    x, y = tiny_data(n=n, d=d, c=c, seed=1)
    return Dataset("t", x, y, x[:2], y[:2], c)


# ------------------------------------------------------------------------------------------ the oracle cases
def _relu_mlp():
    import torch

    return tiny_mlp(seed=3, act=torch.nn.ReLU)


def _conv():
    import torch

    torch.manual_seed(4)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8, 3))


def _batchnorm_eval():
    import torch

    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


# curvlinops' way: one table of cases, served by one fixture (conftest.oracle_case) to every float64 oracle test.
# Uneven chunks on purpose (7 = 3 + 3 + 1, 8 = 6 + 2): a result must not depend on how the probe set is split.
ORACLE_CASES = {
    "tanh-mlp-ce-3+3+1": dict(model=tiny_mlp, input_dim=4, n=7, chunk=3, loss=("ce", 0.0, 1.0)),
    "relu-mlp-smoothed-ce-6+2": dict(model=_relu_mlp, input_dim=4, n=8, chunk=6, loss=("ce", 0.2, 1.0)),
    "conv-mse-scaled-3+3+1": dict(model=_conv, input_dim=(1, 4, 4), n=7, chunk=3, loss=("mse", 0.0, 1.5)),
    "batchnorm-eval-ce-6+2": dict(model=_batchnorm_eval, input_dim=4, n=8, chunk=6, loss=("ce", 0.1, 1.0)),
}


def oracle_case(name):
    """(model, x, y, objective, chunk) of one ORACLE_CASES entry, in the current default dtype."""
    from ijr_cli.objectives import Objective

    case = ORACLE_CASES[name]
    kind, smoothing, scale = case["loss"]
    x, y = tiny_data(n=case["n"], d=case["input_dim"], c=3, seed=1)
    return case["model"](), x, y, Objective(kind, 3, label_smoothing=smoothing, target_scale=scale), case["chunk"]


def run_in_process(compose, run_dir, overrides):
    """`ijr-train OVERRIDES hydra.run.dir=RUN_DIR` in this process, on the composed config (`compose` is
    conftest's fixture); returns the exit code. Tests monkeypatch the run's parts this way."""
    from omegaconf import OmegaConf

    from ijr_cli.run import experiment

    cfg = compose(list(overrides))
    return experiment.run(
        OmegaConf.to_object(cfg),
        run_dir=Path(run_dir),
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        overrides=list(overrides),
    )


def can_mount_tmpfs() -> bool:
    """A private mount namespace (unshare -rm) in which a small tmpfs can be mounted: root, or user namespaces."""
    try:
        r = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0
