"""The cost of each metric group, and of the presets metrics=full and metrics=appendix_d, against one training
step: the run's own Measurer (built from the composed config, as ijr-train builds it) on fcn3 and cnn6.

    python bench/measure_cost.py                         # CPU: the CIFAR-10 subset, probe 1,000, batch 128
    python bench/measure_cost.py --device cuda --n-train 5000 --probe 5000

Per model: the median seconds of one SGD step (batch 128, after warm-up) and, per group, the median of --repeats
measurements (the first one is a warm-up: the Lanczos warm starts are then those of a run's later rows), with the
products or passes the group records; then each preset's sum over its groups, as seconds and as training steps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ijr_cli.cli.compose import composer
from ijr_cli.core import records
from ijr_cli.core.metric_names import GROUP_OF, SECONDS
from ijr_cli.run.build import build
from ijr_cli.train.step import train_step

SUBSET = (
    Path(os.environ.get("IJR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
    / "cifar10-subset.npz"
)
COUNTS = (
    "sharpness_matvecs",
    "gn_sharpness_matvecs",
    "batch_lambda_max_matvecs",
    "jacobian_passes",
    "m_vectors_passes",
    "per_example_n",
)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def preset_names(name: str):
    with composer() as compose:
        return list(compose(config_name="train", overrides=[f"metrics={name}"]).metrics.names)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="fcn3,cnn6")
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--probe", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    presets = {p: preset_names(p) for p in ("eos", "full", "appendix_d")}
    every = sorted({n for names in presets.values() for n in names}, key=list(GROUP_OF).index)
    groups = list(dict.fromkeys(GROUP_OF[n] for n in every))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else records.cpu_name()
    print(f"# device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, fp32")
    for model in args.models.split(","):
        over = [
            "dataset=npz" if SUBSET.exists() else "dataset=synthetic",
            f"model={model}",
            "loss=ce",
            "optimizer=sgd",
            "optimizer.batch_size=128",
            "optimizer.lr=0.04",
            f"dataset.n_train={args.n_train}",
            f"probe.n={args.probe}",
            f"trainer.device={args.device}",
            f"metrics.names=[{','.join(every)}]",
        ]
        if SUBSET.exists():
            over.append(f"dataset.path={SUBSET}")
        with composer() as compose:
            cfg = OmegaConf.to_object(compose(config_name="train", overrides=over))
        b = build(cfg)
        st = b.state
        for s in range(5):
            train_step(st.model, st.optimizer, b.data, s, b.spec)
        times = []
        for s in range(5, 25):
            sync(device)
            t0 = time.perf_counter()
            train_step(st.model, st.optimizer, b.data, s, b.spec)
            sync(device)
            times.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        print(f"\n## {model} ({sum(p.numel() for p in st.model.parameters()):,} parameters), probe {args.probe}, "
              f"one SGD step (batch 128): {step_s * 1e3:.1f} ms\n")  # fmt: skip
        print("| group | s / measurement | training steps | products or passes |")
        print("|---|---|---|---|")
        cost = {}
        for g in groups:
            samples, counts = [], {}
            for r in range(args.repeats + 1):
                row = b.measurer.measure([g], lr=0.04, step=100 + r)
                if r:
                    samples.append(row[SECONDS[g]])
                    counts = {k: row[k] for k in COUNTS if k in row}
            cost[g] = statistics.median(samples)
            extra = ", ".join(f"{k} {v}" for k, v in counts.items())
            print(f"| {g} | {cost[g]:.3f} | {cost[g] / step_s:.1f} | {extra} |")
        print("\n| preset | groups | s / measurement | training steps |")
        print("|---|---|---|---|")
        for p, names in presets.items():
            gs = list(dict.fromkeys(GROUP_OF[n] for n in names))
            total = sum(cost[g] for g in gs)
            print(f"| {p} | {', '.join(gs)} | {total:.2f} | {total / step_s:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
