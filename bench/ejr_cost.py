"""Cost of a training step with each Jacobian regulariser, relative to the plain step, side by side in one process.

    python bench/ejr_cost.py                                   # CPU: simplecnn and fcn3, batch 128
    python bench/ejr_cost.py --device cuda --steps 50 --repeats 5 --models simplecnn wrn

Rows: the plain SGD step; `ejr` (one u per batch, double backward); `ejr_sam` and `ejr_v2` (a second, perturbed
pass); SAM for comparison; and the exact Frobenius penalty of paper 000 App. N Eq. 36, lambda/C ||<J>_B||_F^2
with C create-graph backward passes, written here by hand as the baseline the paper calls inefficient. All rows go
through `train.train_step` except the exact penalty, which runs the same batches through the same optimizer.
Each repeat times every row back to back in a rotated order; the table gives the median seconds per step and
the median ratio to the plain step of the same repeat.

Data: ../shared/datasets/cifar10-subset.npz when present, else a synthetic 3x32x32 task of the same size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from ijr_cli.core import records
from ijr_cli.data import BatchSampler, load_dataset
from ijr_cli.models import build_model
from ijr_cli.objectives import Objective
from ijr_cli.optim import build_sgd
from ijr_cli.train.step import StepSpec, make_batch, train_step

# the real CIFAR-10 subset: ../shared/datasets, or IJR_DATA=FOLDER (the lent GPU machine has no ../shared)
SUBSET = (
    Path(os.environ.get("IJR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
    / "cifar10-subset.npz"
)
ROWS = ["plain", "ejr", "ejr_sam", "ejr_v2", "sam", "exact_frobenius"]


def exact_frobenius_step(model, opt, data, step, spec, lam):
    """Eq. 36-37 by hand: L_B + lambda/C ||<J>_B||_F^2, with C rows of <J> from create-graph backward passes."""
    x, y, _ = make_batch(data, step, spec)
    params = [p for p in model.parameters()]
    opt.zero_grad(set_to_none=True)
    z = model(x)
    mean_z = z.mean(0)
    c = z.shape[1]
    penalty = 0.0
    for k in range(c):
        g = torch.autograd.grad(mean_z[k], params, create_graph=True, retain_graph=True)
        penalty = penalty + sum((t * t).sum() for t in g)
    loss = spec.objective.mean(z, y)
    (loss + lam / c * penalty).backward()
    opt.step()
    return loss.detach()


def time_row(row, model_name, data, device, batch_size, steps, warmup):
    torch.manual_seed(0)
    model = build_model(model_name, data.input_shape, data.num_classes).to(device)
    opt = build_sgd(model.parameters(), lr=0.01)
    kwargs = {
        "ejr": {"ejr": "ejr", "lambda_reg": 0.01},
        "ejr_sam": {"ejr": "ejr_sam", "rho_reg": 2.0},
        "ejr_v2": {"ejr": "ejr_v2", "rho_reg": 2.0, "mu_reg": 0.03},
        "sam": {"sam_rho": 0.05},
    }.get(row, {})
    spec = StepSpec(Objective("ce", data.num_classes), BatchSampler(data.n_train, batch_size, 0, device), 0, **kwargs)

    def one(s):
        if row == "exact_frobenius":
            return exact_frobenius_step(model, opt, data, s, spec, 0.01)
        return train_step(model, opt, data, s, spec)

    for s in range(warmup):
        one(s)
    sync(device)
    t0 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        loss = one(s)
    float(loss)
    sync(device)
    return (time.perf_counter() - t0) / steps


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["simplecnn", "fcn3"])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if SUBSET.exists():
        data = load_dataset("npz", path=str(SUBSET), n_train=5000, standardize="channel", device=device)
        source = "cifar10-subset (5,000 images)"
    else:
        data = load_dataset(
            "synthetic",
            input_shape=[3, 32, 32],
            num_classes=10,
            num_train_examples=5000,
            num_test_examples=100,
            device=device,
        )
        source = "synthetic 3x32x32 (the CIFAR-10 subset is absent)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else records.cpu_name()
    print(
        f"# device {name}, torch {torch.__version__}, {torch.get_num_threads()} threads; data {source}; "
        f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, {args.repeats} repeats"
    )
    for model_name in args.models:
        times = {r: [] for r in ROWS}
        for rep in range(args.repeats):
            order = ROWS[rep % len(ROWS) :] + ROWS[: rep % len(ROWS)]
            for row in order:
                times[row].append(time_row(row, model_name, data, device, args.batch_size, args.steps, args.warmup))
        print(
            f"\n{model_name}\n| step | s/step (median) | × plain (median of paired ratios) | range |\n|---|---|---|---|"
        )
        for row in ROWS:
            ratios = [t / p for t, p in zip(times[row], times["plain"])]
            print(
                f"| {row} | {statistics.median(times[row]):.4f} | {statistics.median(ratios):.2f} | "
                f"{min(ratios):.2f}–{max(ratios):.2f} |"
            )


if __name__ == "__main__":
    main()
