"""Lanczos for the top-k LARGEST ALGEBRAIC eigenpairs of a symmetric operator, on the operator's device.

Why by hand: scipy's eigsh (curvlinops) round-trips every product through host numpy, and power iteration
(PyHessian) returns the eigenvalue of largest MAGNITUDE, which early in training is often a negative one
(SCIENCE.md, `sharpness`). Lanczos with full reorthogonalisation converges in few products for the well-separated
top of a Hessian spectrum, keeps the basis on the device, and picks the algebraic top from the Ritz values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass
class LanczosResult:
    eigenvalues: torch.Tensor  # (k,) descending, float64 on the host
    eigenvectors: torch.Tensor  # (dim, k) unit columns, on the operator's device and dtype
    residuals: torch.Tensor  # (k,) ||A y - theta y|| / |theta| (the Lanczos estimate |beta_j s_ji| / |theta_i|)
    num_products: int
    converged: bool


def lanczos_top(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    k: int = 1,
    max_iters: int = 100,
    tol: float = 1e-3,
    v0: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LanczosResult:
    """Top-k eigenpairs of the symmetric operator `matvec` on R^dim.

    Stops when every one of the k Ritz pairs has relative residual <= `tol`, when the Krylov space is exhausted
    (dim reached, or an invariant subspace: beta ~ 0), or after `max_iters` products. `v0` warm-starts (e.g. the
    previous top eigenvector); otherwise the start is Gaussian from `generator`. Cost: one product per
    iteration, plus O(j * dim) for the two Gram-Schmidt passes of iteration j; one host sync per iteration
    (the 2 tridiagonal numbers), negligible next to a product over a probe set.
    """
    if k < 1 or k > dim:
        raise ValueError(f"k must be in [1, dim={dim}], got {k}")
    max_iters = min(max_iters, dim)
    device = torch.device(device)
    if v0 is None or float(torch.linalg.vector_norm(v0)) == 0.0:
        q = (
            torch.randn(dim, generator=generator, dtype=dtype, device=device)
            if generator is not None and generator.device == device
            else torch.randn(dim, generator=generator, dtype=dtype).to(device)
        )
    else:
        q = v0.detach().to(device=device, dtype=dtype).clone()
    q /= torch.linalg.vector_norm(q)
    basis = [q]
    alphas, betas = [], []
    theta = s = None
    beta = 0.0
    converged = False
    for j in range(max_iters):
        w = matvec(basis[j])
        alpha_t = torch.dot(w, basis[j])
        w = w - alpha_t * basis[j]
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        Q = torch.stack(basis)  # (j+1, dim): full reorthogonalisation, twice ("twice is enough")
        w = w - Q.T @ (Q @ w)
        w = w - Q.T @ (Q @ w)
        beta_t = torch.linalg.vector_norm(w)
        alpha, beta = torch.stack([alpha_t, beta_t]).double().tolist()  # the iteration's one host sync
        if not (math.isfinite(alpha) and math.isfinite(beta)):  # a non-finite operator (diverged parameters)
            nan = torch.full((k,), math.nan, dtype=torch.float64)
            return LanczosResult(nan, torch.full((dim, k), math.nan, dtype=dtype, device=device), nan, j + 1, False)
        alphas.append(alpha)
        T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            T += torch.diag(off, 1) + torch.diag(off, -1)
        theta, s = torch.linalg.eigh(T)  # ascending
        n_ritz = j + 1
        if n_ritz >= k:
            top = torch.arange(n_ritz - 1, n_ritz - 1 - k, -1)
            resid = (beta * s[-1, top]).abs() / theta[top].abs().clamp_min(1e-30)
            if bool((resid <= tol).all()) or beta <= 1e-10 * max(1.0, abs(float(theta[-1]))) or n_ritz == dim:
                converged = True
                break
        if j + 1 == max_iters:
            break
        betas.append(beta)
        basis.append(w / beta_t)
    n_ritz = len(alphas)
    k_eff = min(k, n_ritz)
    top = torch.arange(n_ritz - 1, n_ritz - 1 - k_eff, -1)
    Q = torch.stack(basis[:n_ritz])
    vecs = Q.T @ s[:, top].to(device=device, dtype=dtype)
    vecs = vecs / torch.linalg.vector_norm(vecs, dim=0, keepdim=True)
    resid = (beta * s[-1, top]).abs() / theta[top].abs().clamp_min(1e-30)
    return LanczosResult(
        eigenvalues=theta[top], eigenvectors=vecs, residuals=resid, num_products=n_ritz, converged=converged
    )
