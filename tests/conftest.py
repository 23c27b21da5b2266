"""Shared fixtures: the CLI as a subprocess, the composed config in-process, the shared datasets (if present)."""

from __future__ import annotations

import os

import pytest
from helpers import IJR_TRAIN, ROOT, SHARED_DATASETS, TINY, cli  # noqa: F401 (re-exported to the tests)


def run_cli(args, *, cwd=None, timeout=300, env=None):
    """Run `ijr-train ARGS` and return the CompletedProcess (text output)."""
    return cli("ijr-train", args, cwd=cwd, timeout=timeout, env=env)


@pytest.fixture
def compose():
    """Compose the real configs in-process: compose(overrides) -> DictConfig (without the hydra node)."""
    from ijr_cli.cli.compose import composer

    with composer() as hydra_compose:
        yield lambda overrides=(): hydra_compose(
            config_name="train", overrides=list(overrides), return_hydra_config=False
        )


@pytest.fixture(params=sorted(__import__("helpers").ORACLE_CASES))
def oracle_case(request, float64):
    """One case of helpers.ORACLE_CASES in float64: (model, x, y, objective, chunk)."""
    from helpers import oracle_case as make

    return make(request.param)


@pytest.fixture
def float64():
    """Exact comparisons in float64; the default dtype is restored afterwards for other tests."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def cifar_subset():
    path = SHARED_DATASETS / "cifar10-subset.npz"
    if not path.exists():
        pytest.skip("../shared/datasets is absent (a fresh clone has no shared data)")
    return path


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real one-node SLURM (tests/slurm_cluster.py) for the session; skipped where it cannot run (not root
    and SLURM not installed, or IJR_SKIP_SLURM=1). SLURM_CONF points the clients (and the jobs) at it."""
    from slurm_cluster import LocalSlurm, SlurmUnavailable

    if os.environ.get("IJR_SKIP_SLURM") == "1":
        pytest.skip("IJR_SKIP_SLURM=1")
    cluster = LocalSlurm()
    try:
        cluster.start()
    except SlurmUnavailable as e:
        pytest.skip(str(e))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.env["SLURM_CONF"]
    try:
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture
def drawn(monkeypatch):
    """Every matplotlib figure ijr-report saves in this process, by file stem (after `declutter`, as saved)."""
    from ijr_cli.report import figures

    seen = {}
    save = figures._save

    def keep(fig, out_dir, name, title, caption):
        seen[name] = fig
        return save(fig, out_dir, name, title, caption)

    monkeypatch.setattr(figures, "_save", keep)
    return seen
