"""The single-vector Lanczos that ijr used before issue 15 (commit 8724314), kept verbatim as the benchmark's peer:
`bench/solver_warm.py` runs it beside the block solver along the default experiment. Not used by ijr itself; its
four failure modes are the tests of tests/test_lanczos.py.
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
    basis = _Basis(dim, max_iters, q)
    alphas, betas = [], []
    theta = s = None
    beta = 0.0
    converged = False
    for j in range(max_iters):
        qj = basis[j]
        w = matvec(qj)
        alpha_t = torch.dot(w, qj)
        w = w - alpha_t * qj
        if j > 0:
            w = w - betas[-1] * basis[j - 1]
        w = basis.project_out(basis.project_out(w))  # full reorthogonalisation, twice ("twice is enough")
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
    vecs = basis.combine(s[:, top].to(device=device, dtype=dtype))
    vecs = vecs / torch.linalg.vector_norm(vecs, dim=0, keepdim=True)
    resid = (beta * s[-1, top]).abs() / theta[top].abs().clamp_min(1e-30)
    return LanczosResult(
        eigenvalues=theta[top], eigenvectors=vecs, residuals=resid, num_products=n_ritz, converged=converged
    )


class _Basis:
    """The Lanczos vectors, stored in blocks of BLOCK rows allocated as the basis grows: memory stays at about one
    copy of the vectors in use (stacking a list of vectors every iteration, as before, held two copies), and no
    block is ever copied. Gram-Schmidt runs block by block (block modified Gram-Schmidt: at least as stable as one
    classical pass over all vectors)."""

    BLOCK = 16

    def __init__(self, dim: int, capacity: int, first: torch.Tensor):
        self.dim, self.capacity, self.count = dim, capacity, 0
        self.blocks: list = []
        self.append(first)

    def append(self, v: torch.Tensor) -> None:
        row = self.count % self.BLOCK
        if row == 0:
            rows = min(self.BLOCK, self.capacity - self.count)
            self.blocks.append(torch.empty(rows, self.dim, dtype=v.dtype, device=v.device))
        self.blocks[-1][row] = v
        self.count += 1

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.blocks[i // self.BLOCK][i % self.BLOCK]

    def _filled(self):
        for b, block in enumerate(self.blocks):
            yield b * self.BLOCK, block[: min(self.BLOCK, self.count - b * self.BLOCK)]

    def project_out(self, w: torch.Tensor) -> torch.Tensor:
        """w minus its projection on the span of the basis."""
        for _, q in self._filled():
            w = w - q.T @ (q @ w)
        return w

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """sum_i basis[i] coefficients[i] for the first len(coefficients) vectors: (dim, k)."""
        n = coefficients.shape[0]
        out = torch.zeros(self.dim, coefficients.shape[1], dtype=coefficients.dtype, device=coefficients.device)
        for start, q in self._filled():
            rows = min(q.shape[0], n - start)
            if rows > 0:
                out += q[:rows].T @ coefficients[start : start + rows]
        return out
