"""Training throughput: ijr-train's loop (`train.fit` + `train.train_step`, metrics off) against a minimal
hand-written PyTorch loop, side by side in one process, same model, same data, same batch size.

    python bench/train_throughput.py                      # CPU: fcn3, cnn6, vgg11 on the CIFAR-10 subset
    python bench/train_throughput.py --device cuda --steps 400 --repeats 5

Data: ../shared/datasets/cifar10-subset.npz (first 5,000 images) when present, else a synthetic 3x32x32 task
of the same size (said in the output). Both loops draw a fresh on-device permutation per epoch and take
`batch_size` examples per step; timing covers only the training steps, after warm-up, with a device sync
before each clock read. Repeats alternate which loop runs first; the table shows medians and the spread of
the per-repeat ratio.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ijr_cli.data import BatchSampler, load_dataset
from ijr_cli.models import build_model
from ijr_cli.objectives import Objective
from ijr_cli.optim import build_sgd
from ijr_cli.train import RunState, StepSpec, fit, train_step

SUBSET = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-subset.npz"


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
        idx = perm[i * batch_size:(i + 1) * batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def ijr_loop(model, data, batch_size, steps, lr, device):
    """ijr-train's own loop: `fit` driving `train_step` (evaluation and checkpoints out of the timed region)."""
    opt = build_sgd(model.parameters(), lr=lr)
    spec = StepSpec(objective=Objective("ce", data.num_classes), sampler=BatchSampler(data.n_train, batch_size, 0, device),
                    seed=0)
    state = RunState(model=model, optimizer=opt, last_logged_step=0)  # no step-0 evaluation
    fit(state, total_steps=steps, step_fn=lambda s: train_step(model, opt, data, s, spec), evaluate=lambda s: {},
        log=lambda row: None, checkpoint=lambda: None, lr_at=lambda s: lr, eval_every=10**9,
        checkpoint_every=10**9, sync_every=25, progress=False)


def measure(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="fcn3,cnn6,vgg11")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", default="fcn3=300,cnn6=60,vgg11=6", help="timed steps per repeat, per model")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-train", type=int, default=5000)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if SUBSET.exists():
        data = load_dataset("npz", path=str(SUBSET), n_train=args.n_train, standardize="channel", device=device)
        source = f"cifar10-subset.npz, first {args.n_train}"
    else:
        data = load_dataset("synthetic", input_shape=[3, 32, 32], num_train_examples=args.n_train,
                            num_test_examples=10, device=device)
        source = f"synthetic 3x32x32 ({args.n_train}; ../shared/datasets absent)"
    steps_for = dict(kv.split("=") for kv in args.steps.split(",")) if "=" in args.steps else {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, "
          f"batch {args.batch_size}, data: {source}, repeats {args.repeats}")
    print(f"| model | steps/repeat | hand loop img/s | ijr loop img/s | ratio ijr/hand (min-max) |")
    print("|---|---|---|---|---|")
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
        print(f"| {model_name} | {steps} | {imgs / statistics.median(hand):,.0f} | {imgs / statistics.median(ours):,.0f} "
              f"| {statistics.median(hand) / statistics.median(ours):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
