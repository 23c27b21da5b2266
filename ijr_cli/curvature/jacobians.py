"""Jacobians: the mean logit Jacobian <J> = d<z>/d theta (paper 000) and input-output Jacobians (paper 002).

<J> in R^{m x C} is summarised through its C x C Gram matrix K = <J>^T <J>, built from C backward passes of
the chunked mean logits (exact, memory C x m): ||<J>||_2 = sqrt(lambda_max(K)), ||<J>||_F^2 = tr K,
||<J> u||^2 = u^T K u. For large C (or memory), `mean_jacobian_top_singular` is paper 000's Algorithm 2: power
iteration on <J>^T <J> with one vjp and one jvp per step, never forming <J>.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from ijr_cli.core.config import ProbeConfig, schema_default
from ijr_cli.core.metric_names import JAC_FRO_SQ, JAC_OP_NORM, JAC_U_NORM_SQ
from ijr_cli.curvature.params import ParameterVector
from ijr_cli.curvature.probe import functional_model, probe_chunks


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
    pv = ParameterVector(model)
    n = x.shape[0]
    rows: Optional[torch.Tensor] = None  # accumulated in place: one K x m buffer (K = C is up to 100 rows of m)
    passes = 0
    with probe_chunks(model, n, chunk, bn_mode) as slices:
        for sl in slices:
            z = model(x[sl])
            w = weights(z.shape[1]).to(dtype=z.dtype, device=z.device)
            if rows is None:
                rows = torch.zeros(w.shape[0], pv.dim, dtype=z.dtype, device=z.device)
            for k in range(w.shape[0]):
                g = torch.autograd.grad((z * w[k]).sum(), pv.params, retain_graph=k < w.shape[0] - 1)
                rows[k] += pv.flatten(g)
                passes += 1
    return rows.double() / n, passes


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
    rows, passes = weighted_mean_logit_gradients(model, x, lambda c: torch.full((1, c), c**-0.5), chunk, bn_mode)
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
    """||<J>||_2 by power iteration on <J>^T <J> in logit space (paper 000, Algorithm 2); returns (norm, passes).

    With <J> in R^{m x C}, each iteration maps u in logit space to <J> u in parameter space (a vjp of the mean
    logits, cotangent u) and back to <J>^T <J> u (a jvp, tangent <J> u); stops when the estimate changes by less
    than `tol` relatively.
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
        u = torch.randn(z.shape[0], generator=generator, dtype=z.dtype).to(z.device)
        u /= torch.linalg.vector_norm(u)
        est, passes = 0.0, 0
        for _ in range(max_iters):
            (ju,) = pullback(u)
            _, w = jvp(mean_logits, (params,), (ju,))
            passes += 2
            new = float(torch.linalg.vector_norm(w))
            u = w / max(new, 1e-300)
            if abs(new - est) <= tol * new:
                est = new
                break
            est = new
    return est**0.5, passes


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
