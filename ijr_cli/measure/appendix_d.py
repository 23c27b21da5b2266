"""Paper 000, Appendix D ("Gradient descent in the top Hessian subspace") and Figs 8-11, 14, 27-31: the directions of
the logit-Hessian eigenvectors, the m-vectors and their classes, and how the gradient and the top Hessian
eigenvector sit in the subspace the class means span. One function per metric group (`registry.REGISTRY`).

Notation (SCIENCE.md, paper 000): M(x) = diag(p) - p p^T = Q Lambda Q^T, lambda_(1) >= ... >= lambda_(C) = 0, q_(i)
with the sign convention of `curvature.impurity.logit_hessian_eigh` (the rank-i component of q_(i) is positive);
J(x) = dz(x)/dtheta in R^{m x C}; m(x) = sqrt(lambda_(1)) J q_(1) in R^m (Eq. 31-32); D_i = {x : argmax p(x) = i},
the examples PREDICTED as class i (not their label). Class means m_i = <m>_{D_i}; S = span{m_i} (Eq. 33).
A class with empty D_i gives null (NaN), and so does A_S while any class is empty, as in the paper (Figs 29, 31).

Groups over the probe set S (in probe.bn_mode): `logit_hessian` (one forward pass), `m_vectors` (C backward passes
of class-weighted logit sums). Per-example quantities (`per_example`) use the first `metrics.n_per_example` examples
of S, in eval mode (one vmapped jacrev per chunk: the per-example C x C Gram K(x) = J^T J, from which every norm and
cosine of J q_(i) follows) and C backward passes over that subsample for the mean resultant lengths.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, Tuple

import numpy as np
import torch

from ijr_cli.core.arrays import Array
from ijr_cli.core.metric_names import (
    ALIGN_S_GRAD,
    ALIGN_S_TOP_EIG,
    COS_M_GRAD_Q25,
    COS_M_GRAD_Q50,
    COS_M_GRAD_Q75,
    JQ1_NORM_HIST,
    JQ_COS2_HIST,
    M_CLASS_COUNT,
    M_COS,
    M_MRL,
    PER_EXAMPLE_N,
    Q_LAMBDA_SQRT,
)
from ijr_cli.curvature.impurity import logit_hessian_eigh, ranked_q_lambda_sqrt
from ijr_cli.curvature.jacobians import per_example_logit_gram, weighted_logit_gradients
from ijr_cli.curvature.probe import probe_chunks
from ijr_cli.measure.metrics import probe_gradient, top_eigenvector

if TYPE_CHECKING:
    from ijr_cli.measure.measurer import Measurer

# Fig. 11's histograms: fixed bins (values above the last edge are counted in the last bin)
JQ1_NORM_EDGES = np.linspace(0.0, 4.0, 81)  # sqrt(C) ||J q_(1)|| / ||J||_F: 1 where ||J q_(i)||^2 = ||J||_F^2 / C
COS2_EDGES = np.linspace(0.0, 1.0, 51)  # cos^2(J q_(i), J q_(j)), 1 <= i < j <= C - 1


@torch.no_grad()
def _probabilities(m: "Measurer", x: torch.Tensor, bn_mode: str) -> torch.Tensor:
    """softmax(f(x)) in float64, once per row for each (examples, BN mode): logit_hessian and m_vectors share it."""
    key = ("probabilities", x.shape[0], bn_mode)
    if key in m.row_cache:
        return m.row_cache[key]
    out = []
    with probe_chunks(m.model, x.shape[0], m.probe_chunk, bn_mode) as slices:
        for sl in slices:
            out.append(torch.softmax(m.model(x[sl]).double(), dim=1))
    m.row_cache[key] = torch.cat(out)
    return m.row_cache[key]


def logit_hessian(m: "Measurer", lr: float) -> Dict[str, object]:
    """Fig. 8 / 27: <Q Lambda^{1/2}> over S, the C x C matrix [sqrt(lambda_(1)) q_(1), ..., sqrt(lambda_(C)) q_(C)] in
    the probability-ranked basis (row r: the class of rank r + 1), averaged over S. Its last column is 0
    (lambda_(C) = 0); column i is large and positive at row i and negative at row i + 1 (Theorem 1(b))."""
    p = _probabilities(m, m.x_probe, m.probe_bn_mode)
    return {Q_LAMBDA_SQRT: Array(ranked_q_lambda_sqrt(p).mean(dim=0).cpu().numpy())}


def _class_weights(p: torch.Tensor, extra: torch.Tensor | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weights (n, C, C) whose row i for example x is 1[x in D_i] sqrt(lambda_(1)) q_(1)(x) / |D_i| (times `extra`
    per example), so that sum_x J(x) w_i(x) = <m * extra>_{D_i}; and the class sizes |D_i| (with `extra`, only the
    examples whose extra weight is non-zero count: an example with m(x) = 0 has no direction)."""
    lam, q, order = logit_hessian_eigh(p)
    pred = order[:, 0]
    scale = lam[:, 0].sqrt() if extra is None else lam[:, 0].sqrt() * extra
    onehot = torch.nn.functional.one_hot(pred, p.shape[1]).double()
    if extra is not None:
        onehot = onehot * (extra != 0)[:, None]
    counts = onehot.sum(dim=0)
    w = onehot[:, :, None] * (scale[:, None] * q[:, :, 0])[:, None, :] / counts.clamp_min(1)[None, :, None]
    return w, counts


def _class_means(m: "Measurer", x: torch.Tensor, w: torch.Tensor, bn_mode: str) -> Tuple[torch.Tensor, int]:
    """The rows sum_x J(x) w_i(x) (C x m) by C backward passes per chunk."""
    return weighted_logit_gradients(m.model, x, lambda sl, c: w[sl], m.probe_chunk, bn_mode)


def _cosines(rows: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """C x C cosines between rows; NaN in the rows and columns of absent classes."""
    unit = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True).clamp_min(1e-300)
    cos = unit @ unit.T
    cos[~present, :] = math.nan
    cos[:, ~present] = math.nan
    return cos


def subspace_alignment(basis_rows: torch.Tensor, v: torch.Tensor) -> float:
    """A_S(v) = ||P_S v|| / ||v|| with S the span of `basis_rows` (paper 000 Eq. 33), by a QR of the m x r matrix."""
    q, _ = torch.linalg.qr(basis_rows.T.to(v.dtype))
    return float(torch.linalg.vector_norm(q.T @ v) / torch.linalg.vector_norm(v).clamp_min(1e-300))


def m_vectors(m: "Measurer", lr: float) -> Dict[str, object]:
    """Figs 9 (right), 10 (right), 28, 31: the cosines between the class means m_i over S (`m_cos`, C x C), the class
    sizes |D_i| (`m_class_count`), and A_S of the probe gradient and of the top Hessian eigenvector (`align_S_grad`,
    `align_S_top_eig`; the sharpness group's eigenvector of this row, computed here if that group did not run)."""
    p = _probabilities(m, m.x_probe, m.probe_bn_mode)
    w, counts = _class_weights(p)
    rows, passes = _class_means(m, m.x_probe, w, m.probe_bn_mode)
    present = counts > 0
    out: Dict[str, object] = {
        M_COS: Array(_cosines(rows, present.to(rows.device)).cpu().numpy()),
        M_CLASS_COUNT: Array(counts.cpu().numpy().astype(np.int64)),
        "m_vectors_passes": passes,
    }
    complete = bool(present.all())
    if ALIGN_S_GRAD in m.wanted:
        out[ALIGN_S_GRAD] = subspace_alignment(rows, probe_gradient(m).double()) if complete else math.nan
    if ALIGN_S_TOP_EIG in m.wanted:
        out[ALIGN_S_TOP_EIG] = subspace_alignment(rows, top_eigenvector(m, lr).double()) if complete else math.nan
    return out


def per_example(m: "Measurer", lr: float) -> Dict[str, object]:
    """On the first n_per_example examples of S, in eval mode, from the per-example Gram K(x) = J(x)^T J(x):

    - `m_mrl` (Figs 9 left, 29): the mean resultant length rho_i = ||<m / ||m||>_{D_i}|| in [0, 1] per class;
    - `cos_m_grad_q25/q50/q75` (Fig. 10 middle): quartiles over examples of cos(J q_(1), -g(x)), g(x) the example's
      loss gradient J(x) dl/dz (the descent direction -g, so that alignment is +1 as in the figure);
    - `jq1_norm_hist` (Fig. 11 left): histogram of sqrt(C) ||J q_(1)|| / ||J||_F (Eq. 12 assumes it is about 1; the
      caption's normalisation is garbled in our copy, this one is the text's), bins `JQ1_NORM_EDGES`;
    - `jq_cos2_hist` (Fig. 11 right): histogram of cos^2(J q_(i), J q_(j)) over pairs 1 <= i < j <= C - 1 and
      examples, bins `COS2_EDGES`.
    """
    x, y = m.x_probe[: m.n_per_example], m.y_probe[: m.n_per_example]
    p = _probabilities(m, x, "eval")
    lam, q, _ = logit_hessian_eigh(p)
    k = per_example_logit_gram(m.model, x).to(p.device)  # (n, C, C)
    kq = k @ q  # columns K q_(i)
    qkq = torch.einsum("nci,nci->ni", q, kq)  # ||J q_(i)||^2
    c = p.shape[1]
    out: Dict[str, object] = {PER_EXAMPLE_N: int(x.shape[0])}
    if M_MRL in m.wanted:
        norm_m = (lam[:, 0] * qkq[:, 0]).clamp_min(0).sqrt()
        inv = torch.where(norm_m > 0, 1.0 / norm_m.clamp_min(1e-300), torch.zeros_like(norm_m))
        w, counts = _class_weights(p, extra=inv)
        rows, _ = _class_means(m, x, w, "eval")
        rho = torch.linalg.vector_norm(rows, dim=1).cpu()
        out[M_MRL] = Array(torch.where(counts > 0, rho, torch.full_like(rho, math.nan)).numpy())
    if {COS_M_GRAD_Q25, COS_M_GRAD_Q50, COS_M_GRAD_Q75} & m.wanted:
        with torch.enable_grad(), probe_chunks(m.model, x.shape[0], m.probe_chunk, "eval") as slices:
            gz = []
            for sl in slices:
                z = m.model(x[sl]).detach().requires_grad_(True)
                gz.append(torch.autograd.grad(m.objective.sum(z, y[sl]), z)[0].double())
        gz = torch.cat(gz).to(p.device)
        num = -torch.einsum("nc,ncd,nd->n", q[:, :, 0], k, gz)
        den = (qkq[:, 0] * torch.einsum("nc,ncd,nd->n", gz, k, gz)).clamp_min(0).sqrt()
        cos = num / den.clamp_min(1e-300)
        quartiles = torch.quantile(cos, torch.tensor([0.25, 0.5, 0.75], dtype=cos.dtype, device=cos.device))
        out.update(zip((COS_M_GRAD_Q25, COS_M_GRAD_Q50, COS_M_GRAD_Q75), quartiles.tolist()))
    if JQ1_NORM_HIST in m.wanted:
        fro = torch.diagonal(k, dim1=1, dim2=2).sum(dim=1)
        ratio = (c * qkq[:, 0] / fro.clamp_min(1e-300)).clamp_min(0).sqrt()
        out[JQ1_NORM_HIST] = Array(_histogram(ratio, JQ1_NORM_EDGES), JQ1_NORM_EDGES.tolist())
    if JQ_COS2_HIST in m.wanted and c > 2:
        gram = torch.einsum("nci,ncj->nij", q, kq)  # (J q_(i))^T (J q_(j))
        i, j = torch.triu_indices(c - 1, c - 1, offset=1)
        cos2 = gram[:, i, j].square() / (qkq[:, i] * qkq[:, j]).clamp_min(1e-300)
        out[JQ_COS2_HIST] = Array(_histogram(cos2.reshape(-1), COS2_EDGES), COS2_EDGES.tolist())
    return out


def _histogram(values: torch.Tensor, edges: np.ndarray) -> np.ndarray:
    """Counts in the fixed bins [edges[i], edges[i+1]) (the last bin closed and taking everything above it)."""
    v = np.clip(values.detach().cpu().numpy(), edges[0], edges[-1])
    return np.histogram(v, bins=edges)[0].astype(np.int64)
