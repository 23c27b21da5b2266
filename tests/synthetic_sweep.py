"""Synthetic sweep directories for ijr-report: the files a real `ijr-sweep` leaves, with made-up dynamics.

    python tests/synthetic_sweep.py OUT_DIR [--runs 1000] [--steps 2000] [--metrics 20]

Writes OUT_DIR/sweep.yaml and one run directory per job, named as `ijr-sweep` names them
(`optimizer.batch_size=64,optimizer.lr=0.01,seed=3`), each with config.yaml (the schema's defaults with the
job's values), overrides.yaml, status.json, summary.json and a metrics.jsonl of `--steps` rows holding
`--metrics` metric columns (plus step, lr, batch_loss, elapsed_s). The trajectories are smooth functions of
(lr, batch size, seed) with the shapes the papers describe (sharpness rising to 2/lr, a ∩-shaped impurity),
so that the report's figures look like figures. `tests/test_report*.py` import `write_run` and `make_sweep`;
`bench/report_speed.py` runs this file for the 1,000-run benchmark.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ijr_cli.core import metric_names as M  # noqa: E402

# the 20 metric columns of the benchmark, in SCIENCE.md's names
METRICS = (
    M.TRAIN_LOSS,
    M.TRAIN_ACC,
    M.TRAIN_CE,
    M.TEST_LOSS,
    M.TEST_ACC,
    M.TEST_CE,
    M.GEN_GAP_LOSS,
    M.GEN_GAP_ACC,
    M.SHARPNESS,
    M.THRESHOLD,
    M.GN_SHARPNESS,
    M.IMPURITY_MEAN,
    M.IMPURITY_Q25,
    M.IMPURITY_Q75,
    M.JAC_OP_NORM,
    M.JAC_U_NORM_SQ,
    M.JAC_FRO_SQ,
    M.IJR_PROXY,
    M.INPUT_JAC_MAX,
    M.WEIGHT_NORM,
)


@functools.lru_cache(maxsize=1)
def _composed_default() -> str:
    from omegaconf import OmegaConf

    from ijr_cli.cli.compose import composer

    with composer() as compose:
        return OmegaConf.to_yaml(compose(config_name="train"), resolve=True)


def default_config() -> dict:
    """The resolved config of the default run (`ijr-train` with no overrides), composed once per process."""
    return yaml.safe_load(_composed_default())


def set_key(cfg: dict, dotted: str, value) -> None:
    """Set a dotted config key; a config group's name (`regularizer=ejr`) lives only in overrides.yaml."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        cfg = cfg.setdefault(p, {})
    if not isinstance(cfg.get(leaf), dict):
        cfg[leaf] = value


def trajectories(
    steps: Sequence[int], lr: float, batch: int, seed: int, metrics: Sequence[str]
) -> Dict[str, np.ndarray]:
    """Smooth made-up dynamics: sharpness rises to 2/lr (progressive sharpening, then the edge of stability),
    the mean impurity rises then falls, accuracy saturates lower for larger lr·batch."""
    rng = np.random.default_rng(seed * 7919 + int(lr * 1e6) + batch)
    t = np.asarray(steps, dtype=float) / max(steps[-1], 1)
    thr = 2.0 / lr
    sharp = thr * (0.3 + 0.75 * (1 - np.exp(-6 * t))) * (1 + 0.02 * rng.standard_normal(len(t)))
    imp = 0.45 * t * np.exp(1 - 4 * t) * 4 + 0.01
    acc_final = 0.9 - 0.05 * math.log10(batch) + 0.02 * rng.standard_normal()
    train_acc = 1 - (1 - 0.1) * np.exp(-5 * t)
    test_acc = 0.1 + (acc_final - 0.1) * (1 - np.exp(-5 * t))
    train_ce = 2.3 * np.exp(-4 * t) + 0.01
    test_ce = train_ce + 0.5 * t * (1 + 0.1 * math.log10(batch))
    jac_u = 1 + 50 * t**1.5
    values = {
        M.TRAIN_LOSS: train_ce,
        M.TRAIN_ACC: train_acc,
        M.TRAIN_CE: train_ce,
        M.TEST_LOSS: test_ce,
        M.TEST_ACC: test_acc,
        M.TEST_CE: test_ce,
        M.GEN_GAP_LOSS: test_ce - train_ce,
        M.GEN_GAP_ACC: train_acc - test_acc,
        M.SHARPNESS: sharp,
        M.THRESHOLD: np.full(len(t), thr),
        M.GN_SHARPNESS: 0.9 * sharp,
        M.IMPURITY_MEAN: imp,
        M.IMPURITY_Q25: 0.5 * imp,
        M.IMPURITY_Q75: 1.5 * imp,
        M.JAC_OP_NORM: np.sqrt(10 * jac_u),
        M.JAC_U_NORM_SQ: jac_u,
        M.JAC_FRO_SQ: 10 * jac_u,
        M.IJR_PROXY: imp * jac_u,
        M.INPUT_JAC_MAX: 1 + 3 * t * (1 + batch / 512),
        M.WEIGHT_NORM: 30 + 5 * t,
    }
    return {m: values[m] for m in metrics}


def write_run(
    run_dir: Path,
    overrides: Dict[str, object],
    steps: Sequence[int],
    metrics: Sequence[str] = METRICS,
    status: str = "COMPLETED",
    values: Optional[Dict[str, Sequence[float]]] = None,
    config: Optional[dict] = None,
) -> None:
    """One run directory as `ijr-train` leaves it. `values` replaces the made-up trajectories (metric -> one value
    per step); `status` RUNNING leaves no summary.json."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = config if config is not None else default_config()
    for k, v in overrides.items():
        set_key(cfg, k, v)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (run_dir / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    lr = float(cfg["optimizer"]["lr"])
    batch = int(cfg["optimizer"]["batch_size"] or 1000)
    series = values if values is not None else trajectories(steps, lr, batch, int(cfg["seed"]), metrics)
    lines = []
    for i, step in enumerate(steps):
        row = {"step": int(step), "lr": lr, "batch_loss": 0.5 / (1 + i)}
        row.update({m: float(series[m][i]) for m in series if series[m][i] is not None})
        row["elapsed_s"] = 0.01 * i
        lines.append(json.dumps(row))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    last = json.loads(lines[-1]) if lines else {}
    attempt = {"started": "2026-11-23T00:00:00+00:00", "host": "bench", "pid": 1, "resumed_from_step": None}
    if status != "RUNNING":
        attempt["ended"] = "2026-11-23T00:10:00+00:00"
        best = max(series[M.TEST_ACC]) if M.TEST_ACC in series else None
        summary = {
            **last,
            "status": status,
            "stop_reason": "max_steps" if status == "COMPLETED" else "non-finite loss",
            "steps": int(steps[-1]) if len(steps) else 0,
            "best_test_acc": best,
            "diverged_at_step": int(steps[-1]) if status == "DIVERGED" else None,
            "num_params": 1000,
            "wall_time_s": 600.0,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "status.json").write_text(
        json.dumps(
            {
                "status": status,
                "attempts": [attempt],
                "total_steps": int(steps[-1]) if len(steps) else 0,
                "device": "cpu",
                "dtype": "float32",
                "git": {"commit": None, "dirty": None},
            },
            indent=2,
        )
    )


# the scalar metrics of the paper figures beyond METRICS (report/registry.py)
PAPER_METRICS = METRICS + (
    M.IMPURITY_Q50,
    M.P1_MEAN,
    M.GINI_MEAN,
    M.LOGIT_NORM_MEAN,
    M.LOGIT_SUM_ABS_MEAN,
    M.DIST_INIT,
    M.COS_M_GRAD_Q25,
    M.COS_M_GRAD_Q50,
    M.COS_M_GRAD_Q75,
    M.ALIGN_S_GRAD,
    M.ALIGN_S_TOP_EIG,
    M.BATCH_SHARPNESS,
    M.BATCH_SHARPNESS_SE,
    M.INPUT_JAC_MEAN,
)


def paper_values(steps: Sequence[int], lr: float, batch: int, seed: int) -> Dict[str, np.ndarray]:
    """`trajectories` plus every scalar the paper figures read, with a three-phase ‖⟨J⟩‖ (fast, gentle, fast)
    and one catapult (a loss spike at 60 % of the run, the sharpness dropping after it)."""
    values = trajectories(steps, lr, batch, seed, METRICS)
    t = np.asarray(steps, dtype=float) / max(steps[-1], 1)
    log_j = np.where(t < 0.25, 8 * t, np.where(t < 0.7, 2 + 0.4 * (t - 0.25), 2.18 + 5 * (t - 0.7)))
    values[M.JAC_OP_NORM] = np.exp(log_j)
    spike = (t >= 0.6) & (t < 0.64)
    values[M.TRAIN_LOSS] = np.where(spike, values[M.TRAIN_LOSS] * 25, values[M.TRAIN_LOSS])
    values[M.SHARPNESS] = np.where((t >= 0.62) & (t < 0.7), values[M.SHARPNESS] * 0.5, values[M.SHARPNESS])
    imp = values[M.IMPURITY_MEAN]
    p1 = 1 - 0.9 * np.exp(-4 * t)
    values.update(
        {
            M.IMPURITY_Q50: imp,
            M.P1_MEAN: p1,
            M.GINI_MEAN: 2 * p1 * (1 - p1),
            M.LOGIT_NORM_MEAN: 1 + 5 * t,
            M.LOGIT_SUM_ABS_MEAN: 0.1 + t,
            M.DIST_INIT: 3 * np.sqrt(t),
            M.COS_M_GRAD_Q25: 0.5 - 0.2 * t,
            M.COS_M_GRAD_Q50: 0.7 - 0.2 * t,
            M.COS_M_GRAD_Q75: 0.9 - 0.2 * t,
            M.ALIGN_S_GRAD: 0.9 - 0.5 * t,
            M.ALIGN_S_TOP_EIG: 0.6 + 0.2 * t,
            M.BATCH_SHARPNESS: values[M.THRESHOLD] * (0.5 + 0.5 * (1 - np.exp(-6 * t))),
            M.BATCH_SHARPNESS_SE: np.full(len(t), 0.05 / lr),
            M.INPUT_JAC_MEAN: 0.5 * values[M.INPUT_JAC_MAX],
            M.TEST_LOSS: values[M.TEST_CE],
            M.BATCH_LOSS: values[M.TRAIN_LOSS],
        }
    )
    return values


def write_paper_arrays(run_dir: Path, steps: Sequence[int], classes: int = 4, layers: int = 3, dim: int = 12):
    """arrays.bin as metrics=appendix_d leaves it: every array metric of the paper figures at every step."""
    from ijr_cli.core.arrays import Array, ArrayLog

    rng = np.random.default_rng(len(str(run_dir)))
    position = np.zeros(dim)
    with ArrayLog(run_dir).open() as log:
        for i, step in enumerate(steps):
            t = i / max(len(steps) - 1, 1)
            position = position + rng.standard_normal(dim) * 0.1 + 0.05
            q = np.triu(rng.uniform(-0.3, 0.3, (classes, classes))) * (1 - 0.5 * t)
            cos = np.clip(np.eye(classes) + 0.2 * rng.uniform(-1, 1, (classes, classes)), -1, 1)
            log.write_row(
                int(step),
                {
                    M.TRAJECTORY: Array(position.astype(np.float32)),
                    M.Q_LAMBDA_SQRT: Array(q),
                    M.M_COS: Array((cos + cos.T) / 2),
                    M.M_CLASS_COUNT: Array(np.full(classes, 10, dtype=np.int64)),
                    M.M_MRL: Array(np.linspace(0.3, 0.9, classes) * (0.5 + 0.5 * t)),
                    M.JQ1_NORM_HIST: Array(rng.integers(0, 20, 8).astype(np.float64), list(np.linspace(0, 4, 9))),
                    M.JQ_COS2_HIST: Array(rng.integers(0, 50, 10).astype(np.float64), list(np.linspace(0, 1, 11))),
                    M.WEIGHT_NORM_LAYERS: Array(
                        np.linspace(1, 2, layers) * (1 + t), [f"layer{k}.weight" for k in range(layers)]
                    ),
                },
            )


def job_name(overrides: Dict[str, object]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))


def make_sweep(
    out: Path,
    lrs: Sequence[float],
    batches: Sequence[int],
    seeds: Sequence[int],
    steps: int,
    metrics: Sequence[str] = METRICS,
    every: int = 1,
) -> List[Path]:
    """An lr × batch × seed sweep directory with a plan (sweep.yaml), as `ijr-sweep` writes it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = default_config()
    step_list = list(range(0, steps, every))
    jobs, dirs = [], []
    for lr, batch, seed in itertools.product(lrs, batches, seeds):
        over = {"optimizer.lr": lr, "optimizer.batch_size": batch, "seed": seed}
        name = job_name(over)
        jobs.append({"name": name, "overrides": [f"{k}={v}" for k, v in over.items()]})
        cfg = json.loads(json.dumps(base))
        write_run(out / name, over, step_list, metrics, config=cfg)
        dirs.append(out / name)
    (out / "sweep.yaml").write_text(
        yaml.safe_dump(
            {"study": "synthetic", "launcher": "local", "fixed": ["optimizer=sgd"], "jobs": jobs}, sort_keys=False
        )
    )
    return dirs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument(
        "--runs", type=int, default=1000, help="a multiple of 100: 10 lrs x 10 batch sizes x runs/100 seeds"
    )
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--metrics", type=int, default=20, help=f"at most {len(METRICS)}")
    args = ap.parse_args(argv)
    lrs = [round(0.01 * 1.5**i, 6) for i in range(10)]
    batches = [2 ** (4 + i) for i in range(10)]
    seeds = range(max(1, args.runs // 100))
    make_sweep(Path(args.out), lrs, batches, seeds, args.steps, METRICS[: args.metrics])
    print(
        f"wrote {len(lrs) * len(batches) * len(seeds)} runs x {args.steps} steps x {args.metrics} metrics to {args.out}"
    )


if __name__ == "__main__":
    main()
