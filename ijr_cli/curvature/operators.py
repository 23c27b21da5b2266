"""Curvature products over a probe set: Hessian- and Gauss-Newton-vector products of the data loss.

L_S(theta) = (1/n) sum_{x in S} l(f_theta(x), y), the loss as trained (label smoothing included, no weight decay),
summed over chunks and divided by n exactly once. Vectors are flat (length m, the parameter count) in the
order of `model.parameters()`.

- Hessian, three paths (`path` records which ran):
  * "cached_double_backward" (default, `cache_graph=True`): the gradient graph of every chunk is built once
    (`create_graph=True`) and each product is one more backward through it. Measured on this project's CPU
    (1,000 CIFAR images): 1.2x a gradient per product for fc-tanh, 2.4x for cnn6, against 3.3x / 4.3x for
    forward-over-reverse. Memory: the probe set's activations and their backward graph, held for the estimate.
  * "forward_over_reverse" (`torch.func.jvp` of `torch.func.grad`): no cached graph, about 3 gradients of FLOPs
    per product; falls back to "double_backward" where forward-mode AD is unsupported.
  * "double_backward": `autograd.grad` twice per product, no cache; the path for BatchNorm in train mode when
    the graph is not cached (batch statistics per chunk: Cohen et al.'s "ghost BN"; running statistics untouched).
- Gauss-Newton: G v = (1/n) sum J^T M J v with the closed-form logit Hessian M: CE M = diag(p) - p p^T (for any
  targets summing to 1, so label smoothing too), MSE (Cohen's convention) M = I. One jvp and one vjp per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

from ijr_cli.core.config import ProbeConfig, schema_default
from ijr_cli.curvature.params import ParameterVector
from ijr_cli.curvature.probe import chunk_sum, functional_model, has_batchnorm, probe_chunks
from ijr_cli.data import chunks
from ijr_cli.objectives import MemberObjectives, Objective
from ijr_cli.stack import ModelStack


@dataclass
class ProbeOperator:
    """A curvature operator on R^m with its bookkeeping (products done, path taken)."""

    matvec: Callable[[torch.Tensor], torch.Tensor]
    dim: int
    path: str
    num_products: int = 0
    gradient: Optional[Callable[[], torch.Tensor]] = None  # the cached path: grad L_S from the graph it holds

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.num_products += 1
        return self.matvec(v)


def _buffers(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: b for n, b in model.named_buffers()}


def _probe_product(
    model: nn.Module,
    bn_mode: str,
    pv: ParameterVector,
    n: int,
    chunk: Optional[int],
    v: torch.Tensor,
    product: Callable,
) -> torch.Tensor:
    """(1/n) sum over the probe set's chunks of `product(slice, v as a dict of tensors)`, flattened: what every
    uncached curvature product shares (sum over chunks, divide by the probe size once)."""
    vd = pv.unflatten(v)
    return chunk_sum(model, n, chunk, bn_mode, lambda sl: pv.flatten(product(sl, vd))) / n


def loss_gradient(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: Objective,
    chunk: Optional[int],
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
) -> torch.Tensor:
    """Flat gradient of L_S (for `grad_norm`, `cos_grad_top_eig`): n summed chunks, one division."""
    pv = ParameterVector(model)

    def chunk_gradient(sl: slice) -> torch.Tensor:
        return pv.flatten(torch.autograd.grad(objective.sum(model(x[sl]), y[sl]), pv.params))

    return chunk_sum(model, x.shape[0], chunk, bn_mode, chunk_gradient) / x.shape[0]


def _operator_setup(model: nn.Module, x: torch.Tensor, chunk: Optional[int], bn_mode: str):
    """What every probe operator needs: flat parameter views, probe size, detached parameter values, and the module
    (with its buffers) to call through torch.func."""
    pv = ParameterVector(model)
    fmodel = functional_model(model, bn_mode)
    return pv, x.shape[0], pv.detached(), fmodel, _buffers(fmodel)


def hessian_operator(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: Objective,
    chunk: Optional[int] = None,
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
    path: str = "auto",
    cache_graph: bool = schema_default(ProbeConfig, "cache_graph"),
) -> ProbeOperator:
    """v -> H v for the Hessian of L_S. `path`: "auto" (cached double backward if `cache_graph`, else
    forward-over-reverse with a fallback to double backward), or one of the three paths by name."""
    pv, n, params, fmodel, buffers = _operator_setup(model, x, chunk, bn_mode)

    def chunk_loss(p, xb, yb):
        return objective.sum(functional_call(fmodel, (p, buffers), (xb,)), yb)

    grad_fn = grad(chunk_loss)

    def fwd_rev_chunk(sl, vd):
        return jvp(lambda p: grad_fn(p, x[sl], y[sl]), (params,), (vd,))[1]

    def double_backward_chunk(sl, vd):
        g = torch.autograd.grad(objective.sum(model(x[sl]), y[sl]), pv.params, create_graph=True)
        return torch.autograd.grad(g, pv.params, grad_outputs=[vd[name] for name in pv.names])

    def fwd_rev(v: torch.Tensor) -> torch.Tensor:
        return _probe_product(model, bn_mode, pv, n, chunk, v, fwd_rev_chunk)

    def double_backward(v: torch.Tensor) -> torch.Tensor:
        return _probe_product(model, bn_mode, pv, n, chunk, v, double_backward_chunk)

    cache: List = []

    def build_cache() -> None:
        if not cache:  # build every chunk's gradient graph once, under the probe's mode
            with probe_chunks(model, n, chunk, bn_mode) as slices:
                for sl in slices:
                    loss = objective.sum(model(x[sl]), y[sl])
                    cache.append(torch.autograd.grad(loss, pv.params, create_graph=True))

    def cached_gradient() -> torch.Tensor:
        build_cache()
        return sum(pv.flatten([t.detach() for t in g]) for g in cache) / n

    def cached(v: torch.Tensor) -> torch.Tensor:
        build_cache()
        vs = [t.view(s) for t, s in zip(v.split(pv.sizes), pv.shapes)]
        out = torch.zeros_like(v)
        for g in cache:
            out += pv.flatten(torch.autograd.grad(g, pv.params, grad_outputs=vs, retain_graph=True))
        return out / n

    if path == "cached_double_backward" or (path == "auto" and cache_graph):
        return ProbeOperator(cached, pv.dim, "cached_double_backward", gradient=cached_gradient)
    if path == "double_backward" or (path == "auto" and bn_mode == "train" and has_batchnorm(model)):
        return ProbeOperator(double_backward, pv.dim, "double_backward")
    if path == "forward_over_reverse":
        return ProbeOperator(fwd_rev, pv.dim, "forward_over_reverse")
    operator = ProbeOperator(fwd_rev, pv.dim, "forward_over_reverse")

    def auto(v: torch.Tensor) -> torch.Tensor:  # try forward mode once; fall back for good if it is unsupported
        if operator.path == "forward_over_reverse":
            try:
                return fwd_rev(v)
            except (RuntimeError, NotImplementedError):
                operator.path = "double_backward"
        return double_backward(v)

    operator.matvec = auto
    return operator


def logit_hessian_product(kind: str, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """M u per example: CE (diag(p) - p p^T) u = p * u - p (p . u); MSE u."""
    if kind == "mse":
        return u
    p = torch.softmax(logits, dim=1)
    return p * u - p * (p * u).sum(dim=1, keepdim=True)


def gauss_newton_operator(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    objective: Objective,
    chunk: Optional[int] = None,
    bn_mode: str = schema_default(ProbeConfig, "bn_mode"),
) -> ProbeOperator:
    """v -> G v, G = (1/n) sum_x J(x)^T M(x) J(x), J = d logits / d theta (SCIENCE.md `gn_sharpness`)."""
    pv, n, params, fmodel, buffers = _operator_setup(model, x, chunk, bn_mode)

    def gv_chunk(sl, vd):
        f = lambda p: functional_call(fmodel, (p, buffers), (x[sl],))  # noqa: E731
        z, jv = jvp(f, (params,), (vd,))
        _, pullback = vjp(f, params)
        return pullback(logit_hessian_product(objective.kind, z, jv))[0]

    def gv(v: torch.Tensor) -> torch.Tensor:
        return _probe_product(model, bn_mode, pv, n, chunk, v, gv_chunk)

    return ProbeOperator(gv, pv.dim, "jvp_vjp")


def stacked_hessian_operator(
    stack: ModelStack,
    x: torch.Tensor,
    y: torch.Tensor,
    objectives: MemberObjectives,
    chunk: Optional[int] = None,
    per_member: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """V (K, dim) -> (H_k v_k)_k for the Hessians of the members' L_S, all at once: the cached double backward of
    `hessian_operator` applied to sum_k L_S(theta_k), whose Hessian is block diagonal (members are independent).
    x: the probe set, shared (n, ...) or one per member (K, n, ...) with `per_member`; y: (n,)."""
    n = x.shape[1] if per_member else x.shape[0]
    cache: List = []
    for sl, xs in _probe_slices(x, chunk, per_member):  # every chunk's gradient graph, built once
        loss = objectives.sum(stack(xs, per_member), y[sl]).sum()
        cache.append(torch.autograd.grad(loss, stack.params, create_graph=True))

    def matvec(v: torch.Tensor) -> torch.Tensor:
        vs = stack.unflatten(v)
        out = torch.zeros_like(v)
        for g in cache:
            out += stack.flat(torch.autograd.grad(g, stack.params, grad_outputs=vs, retain_graph=True))
        return out / n

    return matvec


def _probe_slices(x: torch.Tensor, chunk: Optional[int], per_member: bool):
    """The probe set's chunks for a stack: (slice, inputs of the chunk), shared (n, ...) or per member (K, n, ...)."""
    n = x.shape[1] if per_member else x.shape[0]
    for sl in chunks(n, chunk):
        yield sl, (x[:, sl] if per_member else x[sl])


def stacked_loss_gradient(
    stack: ModelStack, x: torch.Tensor, y: torch.Tensor, objectives: MemberObjectives, chunk, per_member=False
) -> torch.Tensor:
    """(K, dim): each member's `loss_gradient`, from backward passes of sum_k L_S(theta_k) chunk by chunk."""
    total = None
    for sl, xs in _probe_slices(x, chunk, per_member):
        g = stack.flat(torch.autograd.grad(objectives.sum(stack(xs, per_member), y[sl]).sum(), stack.params))
        total = g if total is None else total + g
    return total / y.shape[0]


def stacked_gauss_newton_operator(
    stack: ModelStack, x: torch.Tensor, kind: str, chunk: Optional[int] = None, per_member: bool = False
) -> Callable[[torch.Tensor], torch.Tensor]:
    """V (K, dim) -> (G_k v_k)_k: `gauss_newton_operator` for every member, one jvp and one vjp of the vmapped
    forward per chunk (the logit Hessian M per example: CE diag(p) - p p^T, MSE I)."""
    params = tuple(p.detach() for p in stack.params)
    n = x.shape[1] if per_member else x.shape[0]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        vs = tuple(stack.unflatten(v))
        out = torch.zeros_like(v)
        for _, xs in _probe_slices(x, chunk, per_member):
            f = lambda *ps, xs=xs: stack.forward_with(ps, xs, per_member)  # noqa: E731
            z, jv = jvp(f, params, vs)
            _, pullback = vjp(f, *params)
            c = z.shape[-1]
            mjv = logit_hessian_product(kind, z.reshape(-1, c), jv.reshape(-1, c)).view_as(jv)
            out += stack.flat(pullback(mjv))
        return out / n

    return matvec
