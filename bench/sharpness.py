"""One sharpness estimate: ijr (Lanczos on forward-over-reverse HVPs) against PyHessian 0.1 (power iteration)
and curvlinops-for-pytorch 3.0.1 (HessianLinearOperator + scipy eigsh, which="LA"), side by side in one process:
same model, same probe set, same device, same loss (mean cross-entropy).

    pip install pyhessian==0.1 curvlinops-for-pytorch==3.0.1     # the peers: benchmark only, not dependencies
    python bench/sharpness.py                                    # CPU sizes (see --help)
    python bench/sharpness.py --device cuda --n fcn3=5000,cnn6=5000

Reports per method: wall time of one estimate (median of --repeats, cold start), Hessian-vector products,
the eigenvalue, and its relative error against a tight reference (ijr Lanczos, tol 1e-7, up to 500 products).
Also: one HVP against one gradient on the same probe set (the FLOP ratio is about 3).
Models: fc-tanh at initialisation, and cnn6 after 30 full-batch GD steps (lr 0.04) where, early in training,
the Hessian has a large negative eigenvalue: a largest-magnitude method then returns it instead of the top.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ijr_cli.core import records
from ijr_cli.curvature.lanczos import lanczos_top
from ijr_cli.curvature.operators import hessian_operator, loss_gradient
from ijr_cli.data import load_dataset
from ijr_cli.models import build_model
from ijr_cli.objectives import Objective

# the real CIFAR-10 subset: ../shared/datasets, or IJR_DATA=FOLDER (the lent GPU machine has no ../shared)
SUBSET = (
    Path(os.environ.get("IJR_DATA") or Path(__file__).resolve().parents[2] / "shared" / "datasets")
    / "cifar10-subset.npz"
)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def ijr_estimate(model, x, y, chunk, tol, device, max_iters=100):
    obj = Objective("ce", 10)
    op = hessian_operator(model, x, y, obj, chunk)
    r = lanczos_top(
        op,
        op.dim,
        k=1,
        max_iters=max_iters,
        tol=tol,
        generator=torch.Generator().manual_seed(0),
        device=device,
        dtype=x.dtype,
    )
    return float(r.eigenvalues[0]), op.num_products


def pyhessian_estimate(model, x, y, tol, device):
    import sys

    import pyhessian  # noqa: F401  (its __init__ re-exports the class `hessian` under the submodule's name)

    ph = sys.modules["pyhessian.hessian"]

    count = {"n": 0}
    original = ph.hessian_vector_product

    def counting(*args, **kwargs):
        count["n"] += 1
        return original(*args, **kwargs)

    ph.hessian_vector_product = counting
    try:
        h = ph.hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=device.type == "cuda")
        eigenvalues, _ = h.eigenvalues(maxIter=100, tol=tol, top_n=1)
    finally:
        ph.hessian_vector_product = original
    return float(eigenvalues[0]), count["n"]


def curvlinops_estimate(model, x, y, chunk, tol, device):
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import LinearOperator, eigsh

    params = [p for p in model.parameters() if p.requires_grad]
    data = [(x[i : i + chunk], y[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
    op = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params, data, check_deterministic=False).to_scipy()
    count = {"n": 0}

    def matvec(v):
        count["n"] += 1
        return op @ v

    counted = LinearOperator(op.shape, matvec=matvec, dtype=op.dtype)
    vals = eigsh(counted, k=1, which="LA", tol=tol, return_eigenvectors=False)
    return float(vals[0]), count["n"]


def gd_steps(model, x, y, steps, lr):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="fcn3,cnn6")
    ap.add_argument("--n", default="fcn3=5000,cnn6=500", help="probe-set size per model")
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="ijr,pyhessian,curvlinops")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sizes = dict(kv.split("=") for kv in args.n.split(","))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else records.cpu_name()
    print(
        f"# device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, "
        f"tol {args.tol}, repeats {args.repeats}, chunk {args.chunk}"
    )
    print("| model | n | method | s / estimate (median) | products | eigenvalue | rel. error vs reference |")
    print("|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        n = int(sizes.get(model_name, 1000))
        if SUBSET.exists():
            data = load_dataset("npz", path=str(SUBSET), n_train=n, standardize="channel", device=device)
        else:
            data = load_dataset(
                "synthetic", input_shape=[3, 32, 32], num_train_examples=n, num_test_examples=1, device=device
            )
        x, y = data.x_train, data.y_train
        torch.manual_seed(0)
        activation = "tanh" if model_name == "fcn3" else "relu"
        model = build_model(model_name, data.input_shape, 10, activation=activation).to(device)
        label = "fc-tanh (init)" if model_name == "fcn3" else f"{model_name} (30 GD steps, lr 0.04)"
        if model_name != "fcn3":
            gd_steps(model, x, y, 30, 0.04)
        model.eval()
        ref, ref_products = ijr_estimate(model, x, y, args.chunk, 1e-7, device, max_iters=500)
        rows = []
        for method in args.methods.split(","):
            times, result = [], None
            for _ in range(args.repeats):
                if method == "ijr":
                    t, result = timed(lambda: ijr_estimate(model, x, y, args.chunk, args.tol, device), device)
                elif method == "pyhessian":
                    t, result = timed(lambda: pyhessian_estimate(model, x, y, args.tol, device), device)
                else:
                    t, result = timed(lambda: curvlinops_estimate(model, x, y, args.chunk, args.tol, device), device)
                times.append(t)
            value, products = result
            rows.append((method, statistics.median(times), products, value, abs(value - ref) / abs(ref)))
        for method, t, products, value, err in rows:
            print(f"| {label} | {n} | {method} | {t:.3f} | {products} | {value:.5g} | {err:.1e} |")
        obj = Objective("ce", 10)
        op = hessian_operator(model, x, y, obj, args.chunk)
        v = torch.randn(op.dim, device=device)
        t_first = timed(lambda: op(v), device)[0]  # builds the cached gradient graph, then one product
        loss_gradient(model, x, y, obj, args.chunk)  # warm-up
        t_hvp = statistics.median(timed(lambda: op(v), device)[0] for _ in range(args.repeats))
        t_grad = statistics.median(
            timed(lambda: loss_gradient(model, x, y, obj, args.chunk), device)[0] for _ in range(args.repeats)
        )
        print(f"| {label} | {n} | reference (ijr, tol 1e-7) | - | {ref_products} | {ref:.6g} | - |")
        print(
            f"|  |  | one HVP / one gradient | {t_hvp:.4f} s / {t_grad:.4f} s | ratio {t_hvp / t_grad:.2f} "
            f"| graph build once per estimate: {max(t_first - t_hvp, 0):.4f} s |  |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
