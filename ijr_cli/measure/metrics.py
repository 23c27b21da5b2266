"""The metric groups of SCIENCE.md beyond the train/test evaluation: one function per group, each returning its
metrics (the names of `core.metric_names.GROUPS[group]`) and its bookkeeping. `registry.REGISTRY` lists them.

Every function takes the `Measurer` (the model, the probe set S, the Lanczos warm starts, this row's shared work)
and the learning rate of the row. Probe set S: the first `probe_n` training examples (no augmentation), processed
in chunks of `probe_chunk`, losses summed over chunks and divided by |S| once, in `probe_bn_mode` ("eval", or
"train": per-chunk batch statistics, Cohen et al.'s ghost BN; running statistics never change).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, Optional

import torch

from ijr_cli.core.arrays import Array
from ijr_cli.core.metric_names import (
    COS_GRAD_TOP_EIG,
    DIST_INIT,
    GN_SHARPNESS,
    GN_SHARPNESS_MATVECS,
    GN_SHARPNESS_RESID,
    GRAD_NORM,
    GROUPS,
    IJR_PROXY,
    IMPURITY_MEAN,
    INPUT_JAC_MAX,
    INPUT_JAC_MEAN,
    JAC_FRO_SQ,
    JAC_OP_NORM,
    JAC_U_NORM_SQ,
    JACOBIAN_PASSES,
    SHARPNESS,
    SHARPNESS_COUNT,
    SHARPNESS_K,
    SHARPNESS_MATVECS,
    SHARPNESS_PATH,
    SHARPNESS_RESID,
    TEST_INPUT_JAC_MAX,
    TEST_INPUT_JAC_MEAN,
    THRESHOLD,
    WEIGHT_NORM,
    WEIGHT_NORM_LAYERS,
)
from ijr_cli.curvature.impurity import gini, top_impurity
from ijr_cli.curvature.jacobians import (
    gram_summaries,
    input_jacobian_norms,
    mean_jacobian_gram,
    mean_jacobian_top_singular,
    mean_jacobian_u_norm_sq,
)
from ijr_cli.curvature.lanczos import LanczosResult, lanczos_top
from ijr_cli.curvature.operators import ProbeOperator, gauss_newton_operator, hessian_operator, loss_gradient
from ijr_cli.curvature.params import flat_parameters
from ijr_cli.curvature.probe import probe_chunks
from ijr_cli.optim import stability_threshold

TOP_EIGENVECTOR = "top_eigenvector"  # (Measurer.row_cache) the sharpness group's top eigenvector of this row
TRACK_K = "sharpness_track_k"  # (Measurer.warm) sharpness_k=auto: how many eigenpairs the next estimate starts with

if TYPE_CHECKING:
    from ijr_cli.measure.measurer import Measurer


def weights(m: "Measurer", lr: float) -> Dict[str, object]:
    """||theta||, ||theta - theta_0|| (one pass over the parameters) and, when asked for, ||theta_l|| per module
    with parameters of its own (paper 000 Fig. 14; stored as an array labelled with the module names)."""
    theta = flat_parameters(m.model)
    out: Dict[str, object] = {
        WEIGHT_NORM: float(torch.linalg.vector_norm(theta)),
        DIST_INIT: float(torch.linalg.vector_norm(theta - m.init_params)),
    }
    if WEIGHT_NORM_LAYERS in m.wanted:
        names, norms = [], []
        for name, module in m.model.named_modules():
            own = list(module.parameters(recurse=False))
            if own:
                names.append(name)
                norms.append(torch.stack([p.detach().double().square().sum() for p in own]).sum().sqrt())
        out[WEIGHT_NORM_LAYERS] = Array(torch.stack(norms).cpu().numpy(), names)
    return out


def threshold(m: "Measurer", lr: float) -> Dict[str, object]:
    """The stability threshold of the step size (SCIENCE.md `threshold`: 2/lr, or its momentum form)."""
    return {THRESHOLD: stability_threshold(lr, m.momentum, m.nesterov)}


@torch.no_grad()
def probe_outputs(m: "Measurer", lr: float) -> Dict[str, object]:
    """Over S, from one forward pass: the impurity lambda_(1)(x) of diag(p) - p p^T (paper 000 Theorem 1, exact by
    the secular equation), its mean and quartiles (linear interpolation), the Gini impurity 1 - ||p||^2, p_(1),
    and the logit norms ||z|| and |sum z| (paper 000 App. F); all in float64."""
    lams, ginis, p1s, norms, sums = [], [], [], [], []
    with probe_chunks(m.model, m.x_probe.shape[0], m.probe_chunk, m.probe_bn_mode) as slices:
        for sl in slices:
            z = m.model(m.x_probe[sl]).double()
            p = torch.softmax(z, dim=1)
            lams.append(top_impurity(p))
            ginis.append(gini(p))
            p1s.append(p.max(dim=1).values)
            norms.append(torch.linalg.vector_norm(z, dim=1))
            sums.append(z.sum(dim=1).abs())
    lam = torch.cat(lams)
    q = torch.quantile(lam, torch.tensor([0.25, 0.5, 0.75], dtype=lam.dtype, device=lam.device))
    values = torch.stack(
        [
            lam.mean(),
            q[0],
            q[1],
            q[2],
            torch.cat(ginis).mean(),
            torch.cat(p1s).mean(),
            torch.cat(norms).mean(),
            torch.cat(sums).mean(),
        ]
    ).tolist()  # one host sync
    return dict(zip(GROUPS["probe_outputs"], values))  # (impurity mean, q25, q50, q75, gini, p1, |z|, |sum z|)


def probe_gradient(m: "Measurer") -> torch.Tensor:
    """grad L_S (one backward pass over S), computed once per row: grad_norm and cos_grad_top_eig share it."""
    if "gradient" not in m.row_cache:
        m.row_cache["gradient"] = loss_gradient(
            m.model, m.x_probe, m.y_probe, m.objective, m.probe_chunk, m.probe_bn_mode
        )
    return m.row_cache["gradient"]


def grad(m: "Measurer", lr: float) -> Dict[str, object]:
    """||grad L_S||."""
    return {GRAD_NORM: float(torch.linalg.vector_norm(probe_gradient(m)))}


def lanczos_settings(m: "Measurer", key: str, k: int) -> dict:
    """`lanczos_top`'s settings for an estimate of k eigenpairs: the run's solver settings, warm-started from the last
    Ritz vectors stored under `key` (checkpointed, so a resumed run repeats the estimates exactly) beside fresh
    Gaussian directions from the run's seed."""
    return dict(
        k=k,
        max_iters=m.lanczos_max_iters,
        tol=m.lanczos_tol,
        v0=m.warm.get(key),
        generator=torch.Generator().manual_seed(m.seed),
        block_extra=m.lanczos_block_extra,
        min_depth=m.lanczos_min_depth,
    )


def keep_warm(m: "Measurer", key: str, r: LanczosResult) -> None:
    """The next estimate under `key` starts from this one's Ritz vectors."""
    m.warm[key] = r.ritz_vectors.detach().clone()


def lanczos_estimate(m: "Measurer", op: ProbeOperator, key: str, k: int) -> LanczosResult:
    """Top-k algebraic eigenpairs of `op` by block Lanczos (`lanczos_settings`), warm-started and kept warm."""
    r = lanczos_top(op, op.dim, device=m.x_probe.device, dtype=m.x_probe.dtype, **lanczos_settings(m, key, k))
    keep_warm(m, key, r)
    return r


def sharpness(m: "Measurer", lr: float) -> Dict[str, object]:
    """The largest ALGEBRAIC eigenvalue of H = grad^2 L_S (and the top k) by block Lanczos on Hessian-vector
    products, its relative Ritz residual and the products used; |cos(grad L_S, top eigenvector)| when asked for: an
    eigenvector's sign is arbitrary, so the cosine is recorded without it (in [0, 1]).

    sharpness_k=auto (central flows, Cohen, Damian et al. 2025): every eigenvalue above track_fraction * threshold
    (the ones that matter at the edge of stability), at most track_cap of them and always the top one, found by
    growing k (warm-started from the previous block) until the k-th eigenvalue falls below that line; the next
    estimate starts from the count + 1 (checkpointed), so an eigenvalue rising through the line is seen."""
    op = hessian_operator(
        m.model, m.x_probe, m.y_probe, m.objective, m.probe_chunk, m.probe_bn_mode, cache_graph=m.probe_cache_graph
    )
    k: Optional[int] = sharpness_first_k(m, op.dim)
    while k is not None:
        r = lanczos_estimate(m, op, SHARPNESS, k)
        k = sharpness_next_k(m, lr, r, k, op.dim)
    return sharpness_values(m, lr, r, op.num_products, op.path)


def _track_line(m: "Measurer", lr: float) -> float:
    return m.track_fraction * stability_threshold(lr, m.momentum, m.nesterov)


def sharpness_first_k(m: "Measurer", dim: int) -> int:
    """The k of a row's first estimate: sharpness_k, or for auto the count the last row ended with (+ 1)."""
    if m.sharpness_k == "auto":
        return min(int(m.warm.get(TRACK_K, torch.tensor(1))), m.track_cap, dim)
    return m.sharpness_k


def sharpness_next_k(m: "Measurer", lr: float, r: LanczosResult, k: int, dim: int) -> Optional[int]:
    """sharpness_k=auto: the larger k to estimate again while the k-th eigenvalue is above the line; None when this
    estimate is the row's (then the next row's start is kept)."""
    if m.sharpness_k != "auto":
        return None
    count = int((r.eigenvalues >= _track_line(m, lr)).sum())
    if count < k or k >= min(m.track_cap, dim):
        m.warm[TRACK_K] = torch.tensor(min(count + 1, m.track_cap))
        return None
    return min(k + m.lanczos_block_extra, m.track_cap, dim)


def sharpness_values(m: "Measurer", lr: float, r: LanczosResult, products: int, path: str) -> Dict[str, object]:
    """The sharpness group's metrics from its final estimate (and the products all its estimates used)."""
    out: Dict[str, object] = {}
    eigenvalues = r.eigenvalues
    if m.sharpness_k == "auto":
        count = int((r.eigenvalues >= _track_line(m, lr)).sum())
        eigenvalues = r.eigenvalues[: max(count, 1)]
        out[SHARPNESS_COUNT] = count
    out.update(
        {
            SHARPNESS: float(r.eigenvalues[0]),
            SHARPNESS_K: [float(v) for v in eigenvalues],
            SHARPNESS_RESID: float(r.residuals[0]),
            SHARPNESS_MATVECS: products,
            SHARPNESS_PATH: path,
        }
    )
    m.row_cache[TOP_EIGENVECTOR] = r.eigenvectors[:, 0]
    if COS_GRAD_TOP_EIG in m.wanted:
        g, v = probe_gradient(m), r.eigenvectors[:, 0]
        out[COS_GRAD_TOP_EIG] = float(
            torch.dot(g, v).abs() / (torch.linalg.vector_norm(g) * torch.linalg.vector_norm(v)).clamp_min(1e-30)
        )
    return out


def top_eigenvector(m: "Measurer", lr: float) -> torch.Tensor:
    """The top Hessian eigenvector of this row (the sharpness group's; computed now if that group did not run)."""
    if TOP_EIGENVECTOR not in m.row_cache:
        m.row_cache["sharpness"] = sharpness(m, lr)
    return m.row_cache[TOP_EIGENVECTOR]


def gn_sharpness(m: "Measurer", lr: float) -> Dict[str, object]:
    """The top eigenvalue of the Gauss-Newton matrix G = (1/n) sum J^T M J by Lanczos on one jvp and one vjp per
    chunk and product."""
    op = gauss_newton_operator(m.model, m.x_probe, m.y_probe, m.objective, m.probe_chunk, m.probe_bn_mode)
    return gn_sharpness_values(lanczos_estimate(m, op, GN_SHARPNESS, 1), op.num_products)


def gn_sharpness_values(r: LanczosResult, products: int) -> Dict[str, object]:
    return {
        GN_SHARPNESS: float(r.eigenvalues[0]),
        GN_SHARPNESS_RESID: float(r.residuals[0]),
        GN_SHARPNESS_MATVECS: products,
    }


def jacobian(m: "Measurer", lr: float) -> Dict[str, object]:
    """The mean logit Jacobian <J> (paper 000) through its C x C Gram matrix (C <= 100: C backward passes per
    chunk): ||<J>||_2, ||<J>||_F^2, ||<J> u||^2 with u = 1/sqrt(C); for C > 100, paper 000's Algorithm 2 for
    ||<J>||_2 and one backward for ||<J> u||^2, while ||<J>||_F^2 (C x m memory) is not computed. ijr_proxy =
    impurity_mean * ||<J> u||^2, with this row's impurity when that group already ran."""
    x, c = m.x_probe, m.data.num_classes
    if c <= 100:
        k, passes = mean_jacobian_gram(m.model, x, m.probe_chunk, m.probe_bn_mode)
        return jacobian_values(m, lr, gram_summaries(k), passes)
    norm, passes = mean_jacobian_top_singular(
        m.model, x, m.probe_chunk, m.probe_bn_mode, generator=torch.Generator().manual_seed(m.seed)
    )
    u_norm_sq, u_passes = mean_jacobian_u_norm_sq(m.model, x, m.probe_chunk, m.probe_bn_mode)
    out = {JAC_OP_NORM: norm, JAC_FRO_SQ: math.nan, JAC_U_NORM_SQ: u_norm_sq}
    return jacobian_values(m, lr, out, passes + u_passes)


def jacobian_values(m: "Measurer", lr: float, out: Dict[str, object], passes: int) -> Dict[str, object]:
    """The jacobian group's metrics from its norms: ijr_proxy when asked for, and the passes used."""
    if IJR_PROXY in m.wanted:
        impurity = (m.row_cache.get("probe_outputs") or probe_outputs(m, lr))[IMPURITY_MEAN]
        out[IJR_PROXY] = impurity * out[JAC_U_NORM_SQ]
    out[JACOBIAN_PASSES] = passes
    return out


def input_jacobian(m: "Measurer", lr: float) -> Dict[str, object]:
    """Per-example spectral norms of d softmax(f(x)) / dx (paper 002), max and mean, on the first n_input_jac
    examples of S and of the test set, in eval mode (one vmapped jacrev per chunk)."""
    return input_jacobian_values(
        input_jacobian_norms(m.model, m.x_probe[: m.n_input_jac], m.probe_chunk),
        input_jacobian_norms(m.model, m.data.x_test[: m.n_input_jac], m.probe_chunk),
    )


def input_jacobian_values(probe_norms: torch.Tensor, test_norms: torch.Tensor) -> Dict[str, object]:
    out = {}
    for norms, (max_key, mean_key) in (
        (probe_norms, (INPUT_JAC_MAX, INPUT_JAC_MEAN)),
        (test_norms, (TEST_INPUT_JAC_MAX, TEST_INPUT_JAC_MEAN)),
    ):
        out[max_key] = float(norms.max()) if len(norms) else math.nan
        out[mean_key] = float(norms.mean()) if len(norms) else math.nan
    return out
