"""The edge of stochastic stability (Andreyev & Beneventano 2024): curvature seen by the minibatches SGD steps on.

Under SGD, lambda_max of the full-batch Hessian plateaus below 2/lr; what hovers at 2/lr is the batch sharpness

    batch_sharpness = E_B[ g_B^T H_B g_B / ||g_B||^2 ]

over minibatches B of the training batch size (g_B, H_B: the gradient and Hessian of the loss on B, the loss as
trained: label smoothing included, no weight decay, no mixup, no augmentation), and
batch_lambda_max = E_B[lambda_max(H_B)] bounds it from above. This explains paper 000's "SGD with a smaller batch
plateaus lower" (Figs 6, 18, 24): the full-batch sharpness sits below the batch sharpness by a gap that grows as the
batch shrinks.

The minibatches: `metrics.batch_sharpness_batches` draws of `optimizer.batch_size` training examples without
replacement, from their own stream seeded by (seed, step) (the training sampler's stream is never touched, and a
resumed run draws the same batches); each is processed in chunks of probe.chunk, in probe.bn_mode. Full batch (GD):
one batch, standard error 0. Both groups of a row share the draws.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch

from ijr_cli.core.metric_names import (
    BATCH_LAMBDA_MAX,
    BATCH_LAMBDA_MAX_MATVECS,
    BATCH_LAMBDA_MAX_SE,
    BATCH_SHARPNESS,
    BATCH_SHARPNESS_BATCHES,
    BATCH_SHARPNESS_SE,
)
from ijr_cli.curvature.operators import hessian_operator, loss_gradient
from ijr_cli.measure.metrics import lanczos_estimate

if TYPE_CHECKING:
    from ijr_cli.measure.measurer import Measurer

STREAM = 0x0B5_5EED  # separates this stream from any other seeded by (seed, step)


def minibatch_indices(n: int, batch_size: Optional[int], batches: int, seed: int, step: int) -> List[torch.Tensor]:
    """The minibatches of a measurement: `batches` draws of `batch_size` of range(n) without replacement (one draw
    of everything for full batch, None or >= n), from a generator seeded by (seed, step)."""
    if batch_size is None or batch_size >= n:
        return [torch.arange(n)]
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 2654435761 % 2**63 ^ STREAM)
    return [torch.randperm(n, generator=g)[:batch_size] for _ in range(batches)]


def _minibatches(m: "Measurer") -> List[Tuple[torch.Tensor, torch.Tensor]]:
    if "minibatches" not in m.row_cache:
        x, y = m.data.x_train, m.data.y_train
        idx = minibatch_indices(x.shape[0], m.batch_size, m.batch_sharpness_batches, m.seed, m.step)
        m.row_cache["minibatches"] = [(x[i.to(x.device)], y[i.to(y.device)]) for i in idx]
    return m.row_cache["minibatches"]


def _mean_se(values: List[float]) -> Tuple[float, float]:
    """The mean and its standard error (sample standard deviation / sqrt(count); 0 for a single full batch)."""
    t = torch.tensor(values, dtype=torch.float64)
    se = float(t.std(correction=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(t.mean()), se


def batch_sharpness(m: "Measurer", lr: float) -> Dict[str, object]:
    """E_B[g_B^T H_B g_B / ||g_B||^2] and its standard error: per minibatch one gradient (its graph kept, with
    probe.cache_graph) and one Hessian-vector product through it."""
    values = []
    for xb, yb in _minibatches(m):
        op = hessian_operator(
            m.model, xb, yb, m.objective, m.probe_chunk, m.probe_bn_mode, cache_graph=m.probe_cache_graph
        )
        g = (
            op.gradient()
            if op.gradient
            else loss_gradient(m.model, xb, yb, m.objective, m.probe_chunk, m.probe_bn_mode)
        )
        values.append(float(torch.dot(g, op(g)) / torch.dot(g, g).clamp_min(torch.finfo(g.dtype).tiny)))
    mean, se = _mean_se(values)
    return {BATCH_SHARPNESS: mean, BATCH_SHARPNESS_SE: se, BATCH_SHARPNESS_BATCHES: len(values)}


def batch_lambda_max(m: "Measurer", lr: float) -> Dict[str, object]:
    """E_B[lambda_max(H_B)] and its standard error: per minibatch one block Lanczos estimate (algebraic top),
    warm-started from the previous minibatch's Ritz vectors (checkpointed)."""
    values, products = [], 0
    for xb, yb in _minibatches(m):
        op = hessian_operator(
            m.model, xb, yb, m.objective, m.probe_chunk, m.probe_bn_mode, cache_graph=m.probe_cache_graph
        )
        r = lanczos_estimate(m, op, BATCH_LAMBDA_MAX, 1)
        values.append(float(r.eigenvalues[0]))
        products += op.num_products
    mean, se = _mean_se(values)
    return {BATCH_LAMBDA_MAX: mean, BATCH_LAMBDA_MAX_SE: se, BATCH_LAMBDA_MAX_MATVECS: products}
