"""Block Lanczos for the top-k LARGEST ALGEBRAIC eigenpairs of a symmetric operator, on the operator's device.

Why by hand: scipy's eigsh (curvlinops) round-trips every product through host numpy, and power iteration
(PyHessian) returns the eigenvalue of largest MAGNITUDE, which early in training is often a negative one
(SCIENCE.md, `sharpness`). Lanczos with full reorthogonalisation keeps the basis on the device and picks the
algebraic top from the Ritz values.

Why a block (Golub & Underwood 1977; Saad, *Numerical Methods for Large Eigenvalue Problems*, 2011, Sec. 6.6): a
single Krylov vector cannot see multiplicity (a linear model with MSE has H = (1/N) X~^T X~ (x) I_C, its top eigenvalue
C times over), loses members of tight clusters, and a start near a lower eigenvector spans an almost invariant
subspace that passes the residual test after one product. The safeguards, each a test in tests/test_lanczos.py:

- a block of b = k + p vectors (p = `block_extra`): up to b - 1 warm vectors (the previous estimate's Ritz vectors)
  and at least one fresh Gaussian direction, so the start always reaches the whole space;
- convergence when every one of the k wanted Ritz pairs has relative residual ||A y - theta y|| / |theta| <= tol,
  tested only once the block has been multiplied `min_depth` times (the fresh directions need a few products to
  show an eigenvalue above the warm start's);
- a RELATIVE invariant-subspace test: a new block column whose norm after reorthogonalisation is at most
  100 eps ||T|| is replaced by a fresh direction orthogonal to the basis (so a Hessian of scale 1e-13 is treated
  like one of scale 1; an invariant subspace never ends the search early);
- exhaustion: once the basis spans R^dim the Ritz values are exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator, List, Optional

import torch

from ijr_cli.core.config import MetricsConfig, schema_default


@dataclass
class LanczosResult:
    eigenvalues: torch.Tensor  # (k,) descending, float64 on the host
    eigenvectors: torch.Tensor  # (dim, k) unit columns, on the operator's device and dtype
    residuals: torch.Tensor  # (k,) ||A y - theta y|| / |theta| (the block Lanczos estimate ||R s_i|| / |theta_i|)
    num_products: int
    converged: bool
    ritz_vectors: Optional[torch.Tensor] = None  # (dim, <= b) the top Ritz vectors: the next warm start


def lanczos_top(matvec: Callable[[torch.Tensor], torch.Tensor], dim: int, **settings) -> LanczosResult:
    """Top-k eigenpairs of the symmetric operator `matvec` on R^dim by block Lanczos with full reorthogonalisation;
    `settings` are `lanczos_solver`'s (k, max_iters, tol, v0, generator, device, dtype, block_extra, min_depth).

    `v0` ((dim,) or (dim, j)) warm-starts: its first b - 1 columns join the start block beside fresh Gaussian
    directions from `generator`. `max_iters` bounds the products (a block costs b of them; at least `min_depth`
    blocks are always allowed). Stops when every wanted
    Ritz pair has relative residual <= `tol` after at least `min_depth` block products, when the basis spans R^dim,
    or when another block would pass `max_iters`. Cost per block: b products, O(n b dim) for the two reorthogonalisation
    passes over the n basis vectors, and about b host syncs (the new block's column norms).
    """
    solver = lanczos_solver(dim, **settings)
    block = next(solver)
    while True:
        try:
            block = solver.send(torch.stack([matvec(block[:, c]) for c in range(block.shape[1])], dim=1))
        except StopIteration as done:
            return done.value


def lanczos_top_members(
    matvec: Callable[[torch.Tensor], torch.Tensor], members: int, dim: int, requests: dict, device, dtype
) -> dict:
    """Block Lanczos for several members of a pack at once: `requests` maps a member index to its
    `lanczos_solver` settings (k, tol, v0, generator, ...); `matvec` maps (members, dim) -> (members, dim), row i
    the product of member i's operator (`operators.stacked_hessian_operator`). Every member runs its own solver
    (its own start, its own stopping rule: a converged member stops asking while the others go on), so its result
    is the one `lanczos_top` returns for it alone, up to the rounding of the batched products. Returns
    {member: LanczosResult}."""
    solvers = {i: lanczos_solver(dim, device=device, dtype=dtype, **settings) for i, settings in requests.items()}
    blocks = {i: next(solver) for i, solver in solvers.items()}
    results = {}
    while blocks:
        width = max(b.shape[1] for b in blocks.values())
        columns: dict = {i: [] for i in blocks}
        for c in range(width):
            v = torch.zeros(members, dim, device=device, dtype=dtype)  # members not asking multiply 0
            for i, b in blocks.items():
                if c < b.shape[1]:
                    v[i] = b[:, c]
            out = matvec(v)
            for i, b in blocks.items():
                if c < b.shape[1]:
                    columns[i].append(out[i])
        for i in list(blocks):
            try:
                blocks[i] = solvers[i].send(torch.stack(columns[i], dim=1))
            except StopIteration as done:
                results[i] = done.value
                del blocks[i]
    return results


def lanczos_solver(
    dim: int,
    *,
    k: int = schema_default(MetricsConfig, "sharpness_k"),
    max_iters: int = schema_default(MetricsConfig, "lanczos_max_iters"),
    tol: float = schema_default(MetricsConfig, "lanczos_tol"),
    v0: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    block_extra: int = schema_default(MetricsConfig, "lanczos_block_extra"),
    min_depth: int = schema_default(MetricsConfig, "lanczos_min_depth"),
) -> Generator[torch.Tensor, torch.Tensor, LanczosResult]:
    """`lanczos_top` as a generator that leaves the products to its caller: it yields a block (dim, b) and is sent
    the operator applied to it (dim, b); it returns the LanczosResult (StopIteration.value). One algorithm for one
    operator (`lanczos_top`) and for the members of a pack (`lanczos_top_members`)."""
    if k < 1 or k > dim:
        raise ValueError(f"k must be in [1, dim={dim}], got {k}")
    device = torch.device(device)
    b = min(k + max(block_extra, 0), dim)
    max_products = max(max_iters, b * min_depth)  # (a large block still gets its minimum depth)
    fresh = _Gaussian(dim, generator, dtype, device)
    basis = _Basis(dim)
    block = _start_block(v0, b, fresh, dtype, device)
    basis.append(block)
    T = torch.zeros(0, 0, dtype=torch.float64)
    prev_block, prev_r = None, None
    products, depth, converged = 0, 0, False
    theta = s = r_next = None
    while True:
        w = yield block
        products += block.shape[1]
        depth += 1
        a = block.T @ w
        if not bool(torch.isfinite(a).all()):  # a non-finite operator (diverged parameters)
            nan = torch.full((k,), math.nan, dtype=torch.float64)
            return LanczosResult(nan, torch.full((dim, k), math.nan, dtype=dtype, device=device), nan, products, False)
        a = 0.5 * (a + a.T)
        w = w - block @ a
        if prev_block is not None:
            w = w - prev_block @ prev_r.T.to(device=device, dtype=dtype)
        w = basis.project_out(basis.project_out(w))  # full reorthogonalisation, twice ("twice is enough")
        T = _grow(T, a.double().cpu(), prev_r)
        theta, s = torch.linalg.eigh(T)  # ascending
        scale = float(theta.abs().max())
        new_block, r_next = _next_block(w, basis, 100 * torch.finfo(dtype).eps * scale, fresh)
        n = T.shape[0]
        top = torch.arange(n - 1, n - 1 - min(k, n), -1)
        last = slice(n - block.shape[1], n)
        resid = _residuals(r_next, s[last][:, top], theta[top], scale)
        exhausted = basis.width == dim
        if exhausted or (depth >= min_depth and bool((resid <= tol).all())):
            converged = True
            break
        if products + new_block.shape[1] > max_products:
            break
        basis.append(new_block)
        prev_block, prev_r, block = block, r_next, new_block
    n = T.shape[0]
    order = torch.arange(n - 1, n - 1 - min(b, n), -1)
    vecs = basis.combine(s[:, order].to(device=device, dtype=dtype))
    vecs = vecs / torch.linalg.vector_norm(vecs, dim=0, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    top = order[:k]
    resid = _residuals(r_next, s[n - block.shape[1] : n][:, top], theta[top], scale)
    return LanczosResult(
        eigenvalues=theta[top],
        eigenvectors=vecs[:, :k],
        residuals=resid,
        num_products=products,
        converged=converged,
        ritz_vectors=vecs,
    )


def _residuals(r_next: torch.Tensor, s_last: torch.Tensor, theta: torch.Tensor, scale: float) -> torch.Tensor:
    """||A y_i - theta_i y_i|| / |theta_i| = ||R s_i(last block)|| / |theta_i| (the block Lanczos relation), with
    |theta_i| floored at 1e-12 ||T|| so that a wanted eigenvalue of 0 does not divide by 0."""
    norms = torch.linalg.vector_norm(r_next @ s_last, dim=0) if r_next.numel() else torch.zeros(s_last.shape[1])
    return norms / theta.abs().clamp_min(max(1e-12 * scale, 1e-300))


def _grow(t: torch.Tensor, a: torch.Tensor, r: Optional[torch.Tensor]) -> torch.Tensor:
    """T (block tridiagonal) grown by the new block: its diagonal block `a` = Q_j^T A Q_j and its coupling
    r = R_j = Q_j^T A Q_{j-1} (new x previous block) with the transpose."""
    n, w = t.shape[0], a.shape[0]
    out = torch.zeros(n + w, n + w, dtype=torch.float64)
    out[:n, :n] = t
    out[n:, n:] = a
    if r is not None:
        out[n:, n - r.shape[1] : n] = r
        out[n - r.shape[1] : n, n:] = r.T
    return out


class _Gaussian:
    """Fresh unit directions from the caller's generator (on its device, else drawn on the host and moved)."""

    def __init__(self, dim, generator, dtype, device):
        self.dim, self.generator, self.dtype, self.device = dim, generator, dtype, device

    def __call__(self) -> torch.Tensor:
        g = self.generator
        if g is not None and g.device == self.device:
            v = torch.randn(self.dim, generator=g, dtype=self.dtype, device=self.device)
        else:
            v = torch.randn(self.dim, generator=g, dtype=self.dtype).to(self.device)
        return v / torch.linalg.vector_norm(v)


def _start_block(v0, b: int, fresh: _Gaussian, dtype, device) -> torch.Tensor:
    """The first block: the finite, non-zero warm columns of v0 (at most b - 1 when b > 1) and fresh directions,
    orthonormalised (a warm column inside the span of the others is replaced by a fresh one)."""
    warm: List[torch.Tensor] = []
    if v0 is not None:
        v0 = v0.detach().to(device=device, dtype=dtype)
        cols = v0[:, None] if v0.dim() == 1 else v0
        for c in range(cols.shape[1]):
            v = cols[:, c]
            if bool(torch.isfinite(v).all()) and float(torch.linalg.vector_norm(v)) > 0:
                warm.append(v)
    warm = warm[: max(b - 1, 1) if b > 1 else 1]
    columns: List[torch.Tensor] = []
    for v in warm + [None] * (b - len(warm)):
        for _ in range(3):  # a dependent column is redrawn
            u = fresh() if v is None else v
            for _ in range(2):
                for q in columns:
                    u = u - torch.dot(q, u) * q
            norm = float(torch.linalg.vector_norm(u))
            if norm > 1e-6:
                columns.append(u / norm)
                break
            v = None
    return torch.stack(columns, dim=1)


def _next_block(w: torch.Tensor, basis: "_Basis", threshold: float, fresh: _Gaussian):
    """QR of the reorthogonalised block residual: w = Q R, Q orthonormal to the basis. A column whose remaining norm
    is <= `threshold` (relative: 100 eps ||T||) adds no direction of its own; a fresh direction orthogonal to
    everything takes its place while the basis has room (its R entries for that column are 0)."""
    room = basis.dim - basis.width
    qs: List[torch.Tensor] = []
    r = torch.zeros(min(w.shape[1], room), w.shape[1], dtype=torch.float64)
    for c in range(w.shape[1]):
        u = w[:, c]
        coeff = torch.zeros(len(qs), dtype=torch.float64)
        for _ in range(2):
            if qs:
                qm = torch.stack(qs, dim=1)
                h = qm.T @ u
                u = u - qm @ h
                coeff += h.double().cpu()
        norm = float(torch.linalg.vector_norm(u))
        r[: len(qs), c] = coeff
        if len(qs) == room:
            continue
        if norm > threshold:
            r[len(qs), c] = norm
            qs.append(u / norm)
        else:
            qs.append(_fresh_orthogonal(basis, qs, fresh))
    q = torch.stack(qs, dim=1) if qs else w[:, :0]
    return q, r[: len(qs)]


def _fresh_orthogonal(basis: "_Basis", qs: List[torch.Tensor], fresh: _Gaussian) -> torch.Tensor:
    """A fresh Gaussian direction orthogonal to the basis and to the new block's columns so far."""
    for _ in range(5):
        u = fresh()
        for _ in range(2):
            u = basis.project_out(u[:, None])[:, 0]
            for q in qs:
                u = u - torch.dot(q, u) * q
        norm = float(torch.linalg.vector_norm(u))
        if norm > 1e-3:
            return u / norm
    raise RuntimeError("no direction orthogonal to the Lanczos basis could be drawn")  # (the basis spans R^dim)


class _Basis:
    """The Lanczos blocks (dim x width each), kept as allocated: no copy of the basis is ever made, and
    Gram-Schmidt runs block by block (block modified Gram-Schmidt)."""

    def __init__(self, dim: int):
        self.dim, self.width = dim, 0
        self.blocks: List[torch.Tensor] = []

    def append(self, block: torch.Tensor) -> None:
        self.blocks.append(block)
        self.width += block.shape[1]

    def project_out(self, w: torch.Tensor) -> torch.Tensor:
        """w (dim x c) minus its projection on the span of the basis."""
        for q in self.blocks:
            w = w - q @ (q.T @ w)
        return w

    def combine(self, coefficients: torch.Tensor) -> torch.Tensor:
        """sum over the basis vectors q_i coefficients[i]: (dim, columns of coefficients)."""
        out = torch.zeros(self.dim, coefficients.shape[1], dtype=coefficients.dtype, device=coefficients.device)
        start = 0
        for q in self.blocks:
            out += q @ coefficients[start : start + q.shape[1]]
            start += q.shape[1]
        return out
