"""Jacobians: the mean logit Jacobian <J> = d<z>/d theta (paper 000) and input-output Jacobians (paper 002).

<J> in R^{m x C} is summarised through its C x C Gram matrix K = <J>^T <J>, built from C backward passes of
the chunked mean logits (exact, memory C x m): ||<J>||_2 = sqrt(lambda_max(K)), ||<J>||_F^2 = tr K,
||<J> u||^2 = u^T K u. For large C (or memory), `mean_jacobian_top_singular` uses paper 000's Algorithm 2's
products <J>^T <J> u (one vjp and one jvp each), never forming <J>; the iteration is Lanczos with a residual stop.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ijr_cli.core.config import ProbeConfig, schema_default
from ijr_cli.core.metric_names import JAC_FRO_SQ, JAC_OP_NORM, JAC_U_NORM_SQ
from ijr_cli.curvature.lanczos import lanczos_top
from ijr_cli.curvature.params import ParameterVector
from ijr_cli.curvature.probe import functional_model, probe_chunks
from ijr_cli.data import chunks


def weighted_mean_logit_gradients(
    model: nn.Module,
    x: torch.Tensor,
    weights: Callable[[int], torch.Tensor],
    chunk: Optional[int] = None,
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
) -> Tuple[torch.Tensor, int]:
    """Rows grad_theta (w_k^T <z>) = <J> w_k for each row w_k of W = weights(C) (K x C), i.e. (<J> W^T)^T, and the
    backward passes used (K per chunk). W = I gives <J>^T; W = u^T gives (<J> u)^T. The chunks are summed in the
    model's dtype; the result is returned in float64."""
    n = x.shape[0]

    def per_example(sl: slice, c: int) -> torch.Tensor:
        w = weights(c).double() / n
        return w.expand(sl.stop - sl.start, *w.shape)

    return weighted_logit_gradients(model, x, per_example, chunk, bn_mode)


def weighted_logit_gradients(
    model: nn.Module,
    x: torch.Tensor,
    weights: Callable[[slice, int], torch.Tensor],
    chunk: Optional[int] = None,
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
) -> Tuple[torch.Tensor, int]:
    """Rows r_k = sum_x grad_theta (w_k(x)^T z(x)) = sum_x J(x) w_k(x) (K x m, float64) for per-example weights
    `weights(slice, C)` of shape (examples of the slice, K, C), treated as constants, and the backward passes (K per
    chunk). Paper 000 App. D's class means m_i = <sqrt(lambda_(1)) J q_(1)>_{D_i} are such rows."""
    pv = ParameterVector(model)
    rows: Optional[torch.Tensor] = None  # accumulated in place: one K x m buffer (K = C is up to 100 rows of m)
    passes = 0
    with probe_chunks(model, x.shape[0], chunk, bn_mode) as slices:
        for sl in slices:
            z = model(x[sl])
            w = weights(sl, z.shape[1]).to(dtype=z.dtype, device=z.device)
            if rows is None:
                rows = torch.zeros(w.shape[1], pv.dim, dtype=z.dtype, device=z.device)
            for k in range(w.shape[1]):
                g = torch.autograd.grad((z * w[:, k]).sum(), pv.params, retain_graph=k < w.shape[1] - 1)
                rows[k] += pv.flatten(g)
                passes += 1
    return rows.double(), passes


def mean_jacobian_gram(
    model: nn.Module,
    x: torch.Tensor,
    chunk: Optional[int] = None,
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
) -> Tuple[torch.Tensor, int]:
    """K = <J>^T <J> (C x C, float64) and the number of backward passes (C per chunk)."""
    rows, passes = weighted_mean_logit_gradients(model, x, torch.eye, chunk, bn_mode)
    return rows @ rows.T, passes


def gram_summaries(k: torch.Tensor) -> dict:
    """jac_op_norm, jac_fro_sq, jac_u_norm_sq (u = 1/sqrt(C)) from the Gram matrix K."""
    c = k.shape[0]
    return {
        JAC_OP_NORM: float(torch.linalg.eigvalsh(k)[-1].clamp_min(0).sqrt()),
        JAC_FRO_SQ: float(torch.trace(k)),
        JAC_U_NORM_SQ: float(k.sum() / c),
    }


def mean_jacobian_u_norm_sq(
    model: nn.Module,
    x: torch.Tensor,
    chunk: Optional[int] = None,
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
) -> Tuple[float, int]:
    """||<J> u||^2 with u = 1_C / sqrt(C) (paper 000 App. G) from ONE backward pass per chunk:
    <J> u = grad_theta (u^T <z>). For C > 100, where the Gram matrix is not formed."""
    # u in float64, cast to the model's dtype once (built in float32 it would carry float32's rounding of 1/sqrt(C))
    u = lambda c: torch.full((1, c), c**-0.5, dtype=torch.float64)  # noqa: E731
    rows, passes = weighted_mean_logit_gradients(model, x, u, chunk, bn_mode)
    return float(rows[0].square().sum()), passes


def mean_jacobian_top_singular(
    model: nn.Module,
    x: torch.Tensor,
    chunk: Optional[int] = None,
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
    max_iters: int = 100,
    tol: float = 1e-6,
    generator: Optional[torch.Generator] = None,
) -> Tuple[float, int]:
    """||<J>||_2 from the products of paper 000's Algorithm 2, in logit space; returns (norm, passes).

    With <J> in R^{m x C}, one product maps u in logit space to <J> u in parameter space (a vjp of the mean logits,
    cotangent u) and back to <J>^T <J> u (a jvp, tangent <J> u): two passes. Algorithm 2 iterates these products as
    a power iteration and stops when the estimate changes by less than a tolerance, which leaves an error of that
    tolerance divided by (1 - sigma_2/sigma_1) when the top two singular values are close. Here block Lanczos
    (`curvature.lanczos`) runs on the same products and stops when the relative residual of the top Ritz pair is
    <= `tol` (at most `max_iters` products): an eigenvalue error of about tol^2, whatever the gap.
    """
    pv = ParameterVector(model)
    params = pv.detached()
    fmodel = functional_model(model, bn_mode)
    buffers = {n: b for n, b in fmodel.named_buffers()}
    n = x.shape[0]
    with probe_chunks(model, n, chunk, bn_mode) as slices:

        def mean_logits(p):
            return sum(functional_call(fmodel, (p, buffers), (x[sl],)).sum(dim=0) for sl in slices) / n

        z, pullback = vjp(mean_logits, params)
        passes = 0

        def gram_product(u: torch.Tensor) -> torch.Tensor:
            nonlocal passes
            passes += 2
            (ju,) = pullback(u)
            return jvp(mean_logits, (params,), (ju,))[1]

        r = lanczos_top(
            gram_product, z.shape[0], k=1, max_iters=max_iters, tol=tol, generator=generator,
            device=z.device, dtype=z.dtype,
        )  # fmt: skip
    return float(r.eigenvalues[0].clamp_min(0)) ** 0.5, passes


def per_example_logit_gram(model: nn.Module, x: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """K(x) = J(x)^T J(x) (C x C, float64) per example, J(x) = dz(x)/dtheta in R^{m x C} (the per-example NTK), in
    eval mode (a per-example BatchNorm would normalise one example): one vmapped jacrev per chunk, C x m memory per
    example of the chunk (default chunk: 2^26 numbers / (C m), at least 1)."""
    pv = ParameterVector(model)
    params = {n: p.detach() for n, p in model.named_parameters()}
    out = []
    with torch.no_grad():
        c = model(x[:1]).shape[1] if x.shape[0] else 1
    chunk = chunk or max(1, 2**26 // (c * pv.dim))
    with probe_chunks(model, x.shape[0], chunk, "eval") as slices:
        buffers = {n: b for n, b in model.named_buffers()}

        def logits(p, xi):
            return functional_call(model, (p, buffers), (xi[None],))[0]

        for sl in slices:
            jac = vmap(jacrev(logits), in_dims=(None, 0))(params, x[sl])  # name -> (B, C, *shape)
            gram = None
            for j in jac.values():  # summed per parameter tensor in the model's dtype (no concatenated copy)
                j = j.reshape(j.shape[0], j.shape[1], -1)
                term = j @ j.transpose(1, 2)
                gram = term if gram is None else gram + term
            out.append(gram.double())
    return torch.cat(out) if out else torch.zeros(0, c, c, dtype=torch.float64)


@torch.no_grad()
def input_jacobian_norms(model: nn.Module, x: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """Per example ||d softmax(f(x)) / dx||_2, the spectral norm of a C x d matrix (paper 002), in eval mode."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    out = []
    with probe_chunks(model, x.shape[0], chunk, "eval") as slices, torch.enable_grad():
        buffers = {n: b for n, b in model.named_buffers()}

        def prob(xi):
            return torch.softmax(functional_call(model, (params, buffers), (xi[None],))[0], dim=0)

        for sl in slices:
            jac = vmap(jacrev(prob))(x[sl])  # (B, C, *input_shape)
            out.append(torch.linalg.matrix_norm(jac.reshape(jac.shape[0], jac.shape[1], -1), ord=2))
    return torch.cat(out)


def stacked_mean_jacobian_gram(stack, x: torch.Tensor, chunk: Optional[int] = None, per_member: bool = False):
    """(K, C, C) float64: `mean_jacobian_gram` of every member of a `stack.ModelStack`, from C backward passes per
    chunk of sum_k <z_k>_c (each member's row c of <J_k>^T), and the passes per member."""
    n = x.shape[1] if per_member else x.shape[0]
    rows, passes = None, 0
    for part in chunks(n, chunk):
        z = stack(x[:, part] if per_member else x[part], per_member)
        c = z.shape[-1]
        if rows is None:
            rows = torch.zeros(stack.k, c, stack.dim, dtype=z.dtype, device=z.device)
        for j in range(c):
            g = torch.autograd.grad(z[..., j].sum() / n, stack.params, retain_graph=j < c - 1)
            rows[:, j] += stack.flat(g)
            passes += 1
    rows = rows.double()
    return rows @ rows.transpose(1, 2), passes


def stacked_input_jacobian_norms(stack, x: torch.Tensor, chunk: Optional[int] = None) -> torch.Tensor:
    """(K, n): `input_jacobian_norms` of every member of a stack on inputs they share, one vmapped jacrev per chunk
    (the members' C x d Jacobians of each example at once)."""
    params = tuple(p.detach() for p in stack.params)

    def prob(xi):
        return torch.softmax(stack.forward_with(params, xi[None])[:, 0], dim=-1)  # (K, C)

    out = []
    with torch.enable_grad():
        for sl in chunks(x.shape[0], chunk):
            jac = vmap(jacrev(prob))(x[sl])  # (B, K, C, *input_shape)
            out.append(torch.linalg.matrix_norm(jac.reshape(*jac.shape[:3], -1), ord=2))
    return torch.cat(out).T if out else torch.zeros(stack.k, 0, dtype=x.dtype, device=x.device)
