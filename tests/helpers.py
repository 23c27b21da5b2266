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

    mc, pc, oc = MetricsConfig(), ProbeConfig(), OptimizerConfig()
    defaults = dict(
        init_params=flat_parameters(model).clone(),
        probe_n=pc.n,
        probe_chunk=pc.chunk,
        probe_bn_mode=pc.bn_mode.value,
        probe_cache_graph=pc.cache_graph,
        sharpness_k=mc.sharpness_k,
        lanczos_tol=mc.lanczos_tol,
        lanczos_max_iters=mc.lanczos_max_iters,
        n_input_jac=mc.n_input_jac,
        momentum=oc.momentum,
        nesterov=oc.nesterov,
        seed=0,
    )
    return Measurer(model=model, data=data, objective=objective, names=list(names), **{**defaults, **settings})
