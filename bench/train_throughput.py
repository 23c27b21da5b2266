"""Training throughput: ijr-train's loop (`train.fit` + `train.train_step`, metrics off) against a minimal
hand-written PyTorch loop, side by side in one process, same model, same data, same batch size.

    python bench/train_throughput.py                      # CPU: fcn3, cnn6, vgg11 on the CIFAR-10 subset
    python bench/train_throughput.py --device cuda --steps 400 --repeats 5
    python bench/train_throughput.py --overhead           # the loop's own cost per step, on a tiny model

Data: ../shared/datasets/cifar10-subset.npz (first 5,000 images) when present, else a synthetic 3x32x32 task
of the same size (said in the output). Both loops draw a fresh on-device permutation per epoch and take
`batch_size` examples per step; timing covers only the training steps, after warm-up, with a device sync
before each clock read. Each repeat times both loops back to back, alternating which goes first. On a shared
or virtual machine the spread between repeats can exceed the difference being measured, so the table gives
three estimates: medians, the best repeat of each loop (the least disturbed, as `timeit` reports), and the
median of the per-repeat paired ratios with its range.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ijr_cli.core import records
from ijr_cli.data import BatchSampler, load_dataset
from ijr_cli.measure.schedule import Schedule
from ijr_cli.models import build_model
from ijr_cli.objectives import Objective
from ijr_cli.optim import build_sgd
from ijr_cli.train.loop import fit
from ijr_cli.train.state import RunState
from ijr_cli.train.step import StepSpec, train_step

# the real CIFAR-10 subset: ../shared/datasets, or IJR_DATA=FOLDER (the lent GPU machine has no ../shared)
SUBSET = (
    Path(os.environ.get("IJR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
    / "cifar10-subset.npz"
)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_loop(model, x, y, batch_size, steps, lr, device):
    """The plain loop a researcher would write: permutation per epoch, index, forward, CE, backward, step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = x.shape[0]
    per_epoch = n // batch_size
    g = torch.Generator(device=device).manual_seed(0)
    perm = None
    for s in range(steps):
        i = s % per_epoch
        if i == 0:
            perm = torch.randperm(n, generator=g, device=device)
        idx = perm[i * batch_size : (i + 1) * batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def ijr_loop(model, data, batch_size, steps, lr, device):
    """ijr-train's own loop: `fit` driving `train_step` (evaluation and checkpoints out of the timed region)."""
    opt = build_sgd(model.parameters(), lr=lr)
    spec = StepSpec(
        objective=Objective("ce", data.num_classes), sampler=BatchSampler(data.n_train, batch_size, 0, device), seed=0
    )
    state = RunState(model=model, optimizer=opt, last_logged_step=0)  # no step-0 evaluation
    # ijr-train asks its metric schedule at every step; the default (eos) groups, cadences beyond the run
    schedule = Schedule(
        {g: 10**9 for g in ("eval", "weights", "threshold", "probe_outputs", "sharpness")}, total_steps=10**9
    )
    fit(
        state,
        total_steps=steps,
        step_fn=lambda s: train_step(model, opt, data, s, spec),
        evaluate=lambda s: {},
        log=lambda row: None,
        checkpoint=lambda: None,
        lr_at=lambda s: lr,
        row_due=schedule.any_due,
        checkpoint_every=10**9,
        sync_every=25,
        progress=False,
    )


def measure(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def overhead(repeats: int, steps: int) -> None:
    """Per-step cost of each loop on a model so small (digits, 64-16-10, batch 32, one thread) that the
    framework around the step, not the arithmetic, is what is timed: the difference is ijr's loop overhead."""
    torch.set_num_threads(1)
    data = load_dataset("digits", standardize="feature")
    torch.manual_seed(0)
    model = build_model("fcn3", data.input_shape, data.num_classes, widths=[16])
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh():
        model.load_state_dict(state0)
        return model

    cpu = torch.device("cpu")
    run_hand = lambda: hand_loop(fresh(), data.x_train, data.y_train, 32, steps, 0.01, cpu)  # noqa: E731
    run_ours = lambda: ijr_loop(fresh(), data, 32, steps, 0.01, cpu)  # noqa: E731
    run_hand(), run_ours()
    hand, ours = [], []
    for r in range(repeats):
        order = ((hand, run_hand), (ours, run_ours)) if r % 2 == 0 else ((ours, run_ours), (hand, run_hand))
        for times, fn in order:
            times.append(measure(fn, cpu) / steps * 1e6)
    print(
        f"# loop overhead: digits, fcn3 64-16-10, batch 32, 1 thread, {steps} steps x {repeats} repeats, "
        f"torch {torch.__version__}, {records.cpu_name()}"
    )
    print("| loop | us/step median | us/step best |")
    print("|---|---|---|")
    for name, t in (("hand", hand), ("ijr", ours)):
        print(f"| {name} | {statistics.median(t):.1f} | {min(t):.1f} |")
    print(
        f"ijr - hand: {statistics.median(ours) - statistics.median(hand):+.1f} us/step (medians), "
        f"{min(ours) - min(hand):+.1f} us/step (bests)"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="fcn3,cnn6,vgg11")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", default="fcn3=100,cnn6=15,vgg11=3", help="timed steps per repeat, per model")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--overhead", action="store_true", help="measure the per-step overhead on a tiny model only")
    args = ap.parse_args(argv)
    if args.overhead:
        overhead(repeats=max(args.repeats, 12), steps=2000)
        return 0
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if SUBSET.exists():
        data = load_dataset("npz", path=str(SUBSET), n_train=args.n_train, standardize="channel", device=device)
        source = f"cifar10-subset.npz, first {args.n_train}"
    else:
        data = load_dataset(
            "synthetic", input_shape=[3, 32, 32], num_train_examples=args.n_train, num_test_examples=10, device=device
        )
        source = f"synthetic 3x32x32 ({args.n_train}; ../shared/datasets absent)"
    steps_for = dict(kv.split("=") for kv in args.steps.split(",")) if "=" in args.steps else {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else records.cpu_name()
    print(
        f"# device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, "
        f"batch {args.batch_size}, data: {source}, repeats {args.repeats}"
    )
    print(
        "| model | steps x repeats | hand img/s (median / best) | ijr img/s (median / best) "
        "| ratio of medians | ratio of bests | paired ratio, median (range) |"
    )
    print("|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        steps = int(steps_for.get(model_name, args.steps if "=" not in args.steps else 50))
        torch.manual_seed(0)
        init = build_model(model_name, data.input_shape, data.num_classes).to(device)
        state0 = {k: v.clone() for k, v in init.state_dict().items()}

        def fresh():
            init.load_state_dict(state0)
            return init

        for warm in (hand_loop, ijr_loop):  # warm-up (allocator, kernels, caches)
            args_ = (fresh(), data.x_train, data.y_train) if warm is hand_loop else (fresh(), data)
            warm(*args_, args.batch_size, max(2, steps // 5), 0.01, device)
        hand, ours = [], []
        run_hand = lambda: hand_loop(fresh(), data.x_train, data.y_train, args.batch_size, steps, 0.01, device)  # noqa: E731
        run_ours = lambda: ijr_loop(fresh(), data, args.batch_size, steps, 0.01, device)  # noqa: E731
        for r in range(args.repeats):  # alternate which loop goes first: no order bias (caches, clocks)
            order = ((hand, run_hand), (ours, run_ours)) if r % 2 == 0 else ((ours, run_ours), (hand, run_hand))
            for times, fn in order:
                times.append(measure(fn, device))
        imgs = steps * args.batch_size
        ratios = [h / o for h, o in zip(hand, ours)]
        print(
            f"| {model_name} | {steps} x {args.repeats} "
            f"| {imgs / statistics.median(hand):,.0f} / {imgs / min(hand):,.0f} "
            f"| {imgs / statistics.median(ours):,.0f} / {imgs / min(ours):,.0f} "
            f"| {statistics.median(hand) / statistics.median(ours):.3f} | {min(hand) / min(ours):.3f} "
            f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
