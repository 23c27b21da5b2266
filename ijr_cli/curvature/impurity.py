"""Impurity of a probability vector: lambda_(1) of M = diag(p) - p p^T (paper 000, Theorem 1), and Gini.

lambda_(1) is the root in [p_(2), p_(1)] of the secular equation f(l) = 1 - sum_i p_i^2 / (p_i - l) = 0; f is
strictly decreasing there (f -> +inf at p_(2)+, -inf at p_(1)-), so bisection converges to machine precision
in ~60 halvings. `top_impurity_eigvalsh` forms M and calls a batched eigensolver; the two must agree (tested).
"""

from __future__ import annotations

import torch


def top_impurity(p: torch.Tensor, iters: int = 64) -> torch.Tensor:
    """lambda_(1)(M(p)) for each row of p (N, C), by bisection of the secular equation, in float64."""
    p = p.double()
    top2 = p.topk(2, dim=1).values if p.shape[1] > 1 else torch.cat([p, torch.zeros_like(p)], dim=1)
    lo, hi = top2[:, 1].clone(), top2[:, 0].clone()
    tied = (hi - lo) <= 1e-15 * hi.clamp_min(1e-300)  # p_(1) = p_(2): lambda_(1) = p_(1) (a double eigenvalue)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        denom = p - mid[:, None]
        # terms with p_i = 0 vanish; denominators are never 0 strictly inside the bracket
        f = 1.0 - (p.square() / torch.where(denom == 0, torch.ones_like(denom), denom)).sum(dim=1)
        right = f > 0  # the root lies right of mid
        lo = torch.where(right, mid, lo)
        hi = torch.where(right, hi, mid)
    return torch.where(tied, top2[:, 0], 0.5 * (lo + hi))


def top_impurity_eigvalsh(p: torch.Tensor) -> torch.Tensor:
    """The same number from a dense eigendecomposition of M (O(C^3) per example; the reference)."""
    p = p.double()
    m = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.linalg.eigvalsh(m)[:, -1]


def gini(p: torch.Tensor) -> torch.Tensor:
    """1 - ||p||^2 = tr M(p) for each row."""
    p = p.double()
    return 1.0 - p.square().sum(dim=1)


def logit_hessian_eigh(p: torch.Tensor):
    """M(p) = diag(p) - p p^T = Q Lambda Q^T per row of p (N, C), in float64 (paper 000 Theorem 1, App. D).

    Returns (lam, q, order): lam (N, C) the eigenvalues lambda_(1) >= ... >= lambda_(C) = 0 (clamped at 0); q (N, C, C)
    the unit eigenvectors as columns q_(i) in CLASS coordinates; order (N, C) the classes by probability, descending
    (order[:, r] is the class of rank r + 1). Sign convention: the component of q_(i) on the class of rank i is
    positive (Theorem 1(b): q_(i) concentrates on ranks i and i + 1, positive then negative; paper Fig. 8).
    """
    p = p.double()
    order = torch.argsort(p, dim=1, descending=True, stable=True)
    ps = torch.gather(p, 1, order)
    m = torch.diag_embed(ps) - ps[:, :, None] * ps[:, None, :]
    lam, v = torch.linalg.eigh(m)  # ascending, in the probability-ranked basis
    lam, v = lam.flip(1).clamp_min(0), v.flip(2)
    sign = torch.sign(torch.diagonal(v, dim1=1, dim2=2))
    v = v * torch.where(sign == 0, torch.ones_like(sign), sign)[:, None, :]
    q = torch.empty_like(v).scatter_(1, order[:, :, None].expand_as(v), v)  # rank rows -> class rows
    return lam, q, order


def ranked_q_lambda_sqrt(p: torch.Tensor) -> torch.Tensor:
    """Q Lambda^{1/2} = [sqrt(lambda_(1)) q_(1), ..., sqrt(lambda_(C)) q_(C)] per example in the probability-ranked
    basis (row r: the class of rank r + 1), with `logit_hessian_eigh`'s sign convention: (N, C, C)."""
    lam, q, order = logit_hessian_eigh(p)
    ranked = torch.gather(q, 1, order[:, :, None].expand_as(q))
    return ranked * lam.sqrt()[:, None, :]
