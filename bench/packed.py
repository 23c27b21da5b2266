"""Packed sweeps against sequential runs, side by side in one process (`make bench-packed`).

For each setting and each K: (a) K `ijr-train` runs one after another in this process (`run.experiment.run`, the
sequential path), (b) the same K runs as one pack (`run.pack.run_pack`), both with metrics=eos (sharpness by
warm-started Lanczos, threshold, impurity, weight norms) and the train/test evaluation. Members differ in learning
rate and seed. Reports member-steps per second, the speedup of (b) over (a), the pack's estimated memory (and on a
GPU its measured peak), and the final train losses of (a) and (b) (float32: equal to rounding).

    python bench/packed.py                                   # fc-tanh on digits, K = 1, 4, 16, CPU
    python bench/packed.py --settings fcn3_cifar --ks 1 32 --device cuda   # the GPU target (5k CIFAR subset)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10-subset.npz"

SETTINGS = {
    # Cohen et al.'s fc-tanh, full-batch GD on scikit-learn's digits (no download)
    "fc_tanh_digits": ["experiment=digits_fc_tanh", "optimizer.lr=0.05"],
    # the 5k CIFAR-10 subset, SGD at batch 128
    "fcn3_cifar": ["dataset=npz", f"dataset.path={CIFAR}", "model=fcn3", "loss=ce", "optimizer=sgd"],
    "cnn6_cifar": ["dataset=npz", f"dataset.path={CIFAR}", "model=cnn6", "loss=ce", "optimizer=sgd"],
    # a small MLP at a small batch: a step of a few hundred microseconds, mostly per-operation overhead
    "mlp32_synthetic": [
        "dataset=synthetic",
        "model=fcn3",
        "model.widths=[32,32]",
        "loss=ce",
        "optimizer=sgd",
        "optimizer.batch_size=32",
    ],
}


def step_only(compose, setting, k, steps, device, repeats):
    """Median seconds per member-step of the training step alone: K sequential `train_step`s against one
    `packed_train_step` (the same K members; no measurement, no logging)."""
    import statistics

    import torch

    from ijr_cli.run.build import build
    from ijr_cli.stack import ModelStack
    from ijr_cli.train.packed import PackedSpec, StackedSGD, packed_train_step
    from ijr_cli.train.step import train_step

    cfgs = [c for c, _, _ in configs(compose, setting, k, steps, device)]
    seq = [build(c) for c in cfgs]
    packed = [build(c, data=seq[0].data) for c in cfgs]
    stack = ModelStack([b.state.model for b in packed])
    p0 = stack.params[0]
    spec = PackedSpec.of([b.spec for b in packed], [b.data for b in packed], p0.device, p0.dtype)
    sgd = StackedSGD(stack, [0.0] * k, [0.0] * k, False)
    lr = torch.tensor([c.optimizer.lr for c in cfgs], device=p0.device, dtype=p0.dtype)
    active = torch.ones(k, device=p0.device, dtype=p0.dtype)
    sync = torch.cuda.synchronize if p0.is_cuda else (lambda: None)
    times = {"seq": [], "pack": []}
    for r in range(repeats + 1):  # (the first repeat warms up)
        sync()
        t0 = time.perf_counter()
        for s in range(steps):
            for b in seq:
                train_step(b.state.model, b.state.optimizer, b.data, s, b.spec)
        sync()
        t1 = time.perf_counter()
        for s in range(steps):
            packed_train_step(stack, sgd, s, spec, lr, active)
        sync()
        if r:
            times["seq"].append((t1 - t0) / (k * steps))
            times["pack"].append((time.perf_counter() - t1) / (k * steps))
    return statistics.median(times["seq"]), statistics.median(times["pack"])


def configs(compose, setting, k, steps, device):
    from omegaconf import OmegaConf

    out = []
    for i in range(k):
        own = [f"optimizer.lr={0.02 + 0.01 * (i % 8):.3f}", f"seed={i}"]
        overrides = (
            SETTINGS[setting]
            + own
            + [
                "metrics=eos",
                f"trainer.max_steps={steps}",
                f"trainer.eval_every={max(steps // 4, 1)}",
                "+metrics.every.sharpness=20",
                "trainer.progress=false",
                f"trainer.device={device}",
                f"trainer.checkpoint_every={steps}",
            ]
        )
        cfg = compose(config_name="train", overrides=overrides)
        out.append((OmegaConf.to_object(cfg), OmegaConf.to_yaml(cfg, resolve=True), own))
    return out


def final_loss(run_dir: Path) -> float:
    return json.loads((run_dir / "summary.json").read_text()).get("train_loss", float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["fc_tanh_digits"], choices=sorted(SETTINGS))
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-sequential-above", type=int, default=64, help="K above which (a) is not run")
    parser.add_argument(
        "--step-only", action="store_true", help="time the training step alone (median of --repeats), not whole runs"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import contextlib
    import io

    import torch

    from ijr_cli.cli.compose import composer
    from ijr_cli.run import experiment
    from ijr_cli.run.build import build
    from ijr_cli.run.pack import PackJob, member_bytes, run_pack

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.steps} steps")
    if args.step_only:
        print(f"{'setting':16} {'K':>3} {'seq ms/member-step':>19} {'pack ms/member-step':>20} {'speedup':>8}")
        with composer() as compose:
            for setting in args.settings:
                for k in args.ks:
                    seq, pack = step_only(compose, setting, k, args.steps, args.device, args.repeats)
                    print(f"{setting:16} {k:3d} {seq * 1e3:19.3f} {pack * 1e3:20.3f} {seq / pack:7.2f}x", flush=True)
        return
    print(
        f"{'setting':16} {'K':>3} {'seq s':>8} {'pack s':>8} {'seq m-st/s':>11} {'pack m-st/s':>12} {'speedup':>8} "
        f"{'est MiB':>8} {'peak MiB':>9} {'max |dloss|':>11}"
    )
    with composer() as compose:
        for setting in args.settings:
            if "cifar" in setting and not CIFAR.exists():
                print(f"{setting}: {CIFAR} not found; skipped")
                continue
            warm = Path(tempfile.mkdtemp(prefix="ijr-bench-packed-warm-"))  # first-use costs (imports, allocators)
            with contextlib.redirect_stdout(io.StringIO()):
                for i, (cfg, yaml, own) in enumerate(configs(compose, setting, 2, 2, args.device)):
                    experiment.run(cfg, run_dir=warm / "seq" / str(i), config_yaml=yaml, overrides=own)
                two = configs(compose, setting, 2, 2, args.device)
                run_pack([PackJob(c, warm / "pack" / str(i), y, o) for i, (c, y, o) in enumerate(two)], "warm-up")
            shutil.rmtree(warm, ignore_errors=True)
            for k in args.ks:
                cfgs = configs(compose, setting, k, args.steps, args.device)
                tmp = Path(tempfile.mkdtemp(prefix="ijr-bench-packed-"))
                quiet = contextlib.redirect_stdout(io.StringIO())
                seq_s = float("nan")
                if k <= args.skip_sequential_above:
                    t0 = time.perf_counter()
                    with quiet:
                        for i, (cfg, yaml, own) in enumerate(cfgs):
                            experiment.run(cfg, run_dir=tmp / "seq" / str(i), config_yaml=yaml, overrides=own)
                    seq_s = time.perf_counter() - t0
                if torch.cuda.is_available() and args.device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                jobs = [PackJob(c, tmp / "pack" / str(i), y, o) for i, (c, y, o) in enumerate(cfgs)]
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    assert run_pack(jobs, "bench", force_packed=True) == {}
                pack_s = time.perf_counter() - t0
                peak = (
                    torch.cuda.max_memory_allocated() / 2**20
                    if torch.cuda.is_available() and args.device.startswith("cuda")
                    else float("nan")
                )
                estimate = member_bytes(build(cfgs[0][0])) * k / 2**20
                dloss = (
                    max(abs(final_loss(tmp / "seq" / str(i)) - final_loss(tmp / "pack" / str(i))) for i in range(k))
                    if seq_s == seq_s
                    else float("nan")
                )
                steps = k * args.steps
                print(
                    f"{setting:16} {k:3d} {seq_s:8.1f} {pack_s:8.1f} {steps / seq_s:11.1f} {steps / pack_s:12.1f} "
                    f"{seq_s / pack_s:7.2f}x {estimate:8.1f} {peak:9.1f} {dloss:11.2e}",
                    flush=True,
                )
                shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
