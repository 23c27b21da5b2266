"""Warm-started sharpness along the default experiment: the block Lanczos of issue 15 against the single-vector
Lanczos it replaced (bench/single_vector_lanczos.py), side by side in one process on the same parameters.

    python bench/solver_warm.py                 # the default experiment (fc-tanh, digits, GD lr 0.1, MSE, 3,000 steps)
    python bench/solver_warm.py --every 50

The run is trained once (ijr's own step); at every --every steps both solvers estimate the top Hessian eigenvalue of
the probe set at the default tolerance (1e-3), each warm-started from its own previous estimate (the block solver:
its previous Ritz vectors; the single-vector one: its previous top vector), and a tight reference (block Lanczos,
tol 1e-10, cold start, 600 products at most) gives the error. Reported: median and total products, median seconds
per estimate, the slowdown, the largest relative error and the estimates more than 1e-3 below the reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from single_vector_lanczos import lanczos_top as single_vector  # noqa: E402

from ijr_cli.cli.compose import composer  # noqa: E402
from ijr_cli.curvature.lanczos import lanczos_top as block  # noqa: E402
from ijr_cli.curvature.operators import hessian_operator  # noqa: E402
from ijr_cli.run.build import build  # noqa: E402
from ijr_cli.train.step import train_step  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args(argv)
    with composer() as compose:
        cfg = OmegaConf.to_object(compose(config_name="train", overrides=[f"trainer.max_steps={args.steps}"]))
    b = build(cfg)
    st, m = b.state, b.measurer
    warm = {"block": None, "single": None}
    log = {"block": [], "single": []}
    errors = {"block": [], "single": []}
    for step in range(args.steps + 1):
        if step % args.every == 0:
            op = hessian_operator(st.model, m.x_probe, m.y_probe, b.objective, m.probe_chunk, m.probe_bn_mode)
            ref = float(block(op, op.dim, k=1, tol=1e-10, max_iters=600, generator=torch.Generator().manual_seed(1),
                              dtype=m.x_probe.dtype).eigenvalues[0])  # fmt: skip
            for name, solver in (("block", block), ("single", single_vector)):
                op.num_products = 0
                t0 = time.perf_counter()
                r = solver(op, op.dim, k=1, v0=warm[name], generator=torch.Generator().manual_seed(0),
                           dtype=m.x_probe.dtype)  # fmt: skip
                seconds = time.perf_counter() - t0
                warm[name] = r.ritz_vectors if name == "block" else r.eigenvectors[:, 0]
                log[name].append((r.num_products, seconds))
                errors[name].append((ref - float(r.eigenvalues[0])) / abs(ref))
        if step < args.steps:
            train_step(st.model, st.optimizer, b.data, step, b.spec)
    print(f"# default experiment, {args.steps} steps, an estimate every {args.every} ({len(log['block'])} estimates)")
    print("| solver | median products | total products | median s / estimate | largest rel. error | "
          "estimates > 1e-3 low |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in ("single", "block"):
        products = [p for p, _ in log[name]]
        secs = [s for _, s in log[name]]
        worst = max(errors[name], key=abs)
        low = sum(e > 1e-3 for e in errors[name])
        print(f"| {name} | {statistics.median(products)} | {sum(products)} | {statistics.median(secs):.3f} | "
              f"{worst:.1e} | {low} |")  # fmt: skip
    ratio = statistics.median(s for _, s in log["block"]) / statistics.median(s for _, s in log["single"])
    print(f"\nslowdown (median seconds, block / single): {ratio:.2f}")
    for i, (eb, es) in enumerate(zip(errors["block"], errors["single"])):
        if max(eb, es) > 1e-3:
            print(f"step {i * args.every}: single-vector {es:+.2e}, block {eb:+.2e} (relative, reference - estimate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
