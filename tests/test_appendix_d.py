"""Paper 000 App. D quantities against float64 oracles on a tiny model (dense per-example Jacobians, loops over
examples) and the identities: sum_i lambda_(i) = gini, Q Lambda Q^T = M, rho_i in [0, 1], A_S(v in S) = 1."""

import math

import numpy as np
import pytest
import torch
from helpers import measurer, tiny_data, tiny_mlp
from torch.func import functional_call, jacrev

from ijr_cli.curvature.impurity import gini, logit_hessian_eigh, ranked_q_lambda_sqrt, top_impurity
from ijr_cli.curvature.params import ParameterVector
from ijr_cli.data import Dataset
from ijr_cli.measure.appendix_d import COS2_EDGES, JQ1_NORM_EDGES, subspace_alignment
from ijr_cli.objectives import Objective

pytestmark = pytest.mark.usefixtures("float64")
NAMES = [
    "q_lambda_sqrt", "m_cos", "align_S_grad", "align_S_top_eig", "m_mrl", "cos_m_grad_q25", "cos_m_grad_q50",
    "cos_m_grad_q75", "jq1_norm_hist", "jq_cos2_hist", "weight_norm_layers",
]  # fmt: skip


def test_logit_hessian_eigendecomposition_identities_and_theorem_1b():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(50, 6, generator=g), dim=1)
    lam, q, order = logit_hessian_eigh(p)
    m = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    assert torch.allclose(q @ torch.diag_embed(lam) @ q.transpose(1, 2), m, atol=1e-15)
    assert torch.allclose(q.transpose(1, 2) @ q, torch.eye(6).expand(50, 6, 6), atol=1e-13)
    assert torch.allclose(lam.sum(1), gini(p), rtol=1e-13) and torch.allclose(lam[:, 0], top_impurity(p), rtol=1e-12)
    assert (lam[:, :-1] >= lam[:, 1:]).all() and lam[:, -1].abs().max() < 1e-15
    ps = torch.gather(p, 1, order)
    assert (ps[:, :-1] >= ps[:, 1:]).all()
    ranked = ranked_q_lambda_sqrt(p)
    for n in range(50):
        for i in range(5):  # Theorem 1(b): q_(i) is proportional to p_j / (p_j - lambda_(i)), positive at rank i
            v = p[n] / (p[n] - lam[n, i])
            v = v / v.norm() * torch.sign(v[order[n, i]])
            assert torch.allclose(q[n, :, i], v, atol=1e-9)
            assert q[n, order[n, i], i] > 0 and q[n, order[n, i + 1], i] < 0  # the two salient elements
            assert torch.allclose(ranked[n, :, i], lam[n, i].sqrt() * q[n, order[n], i], atol=1e-15)


def _setup(seed=3, n=40, c=3):
    model = tiny_mlp(seed=seed, c=c)
    x, y = tiny_data(n=n, c=c, seed=seed)
    return model, x, y, Dataset("t", x, y, x[:2], y[:2], c)


def _oracle(model, x, y, obj):
    """Per example, densely: J(x) (m x C), p, lambda, q (numpy-free loops over examples)."""
    pv = ParameterVector(model)
    flat = pv.flat_values()
    jac = jacrev(lambda f: functional_call(model, pv.unflatten(f), (x,)))(flat)  # (n, C, m)
    with torch.no_grad():
        z = model(x)
    p = torch.softmax(z, 1)
    lam, q, order = logit_hessian_eigh(p)
    gz = torch.func.vmap(torch.func.grad(lambda zi, yi: obj.sum(zi[None], yi[None])))(z, y)
    return jac.transpose(1, 2), p, lam, q, order, gz, pv


def test_every_appendix_d_metric_against_dense_per_example_jacobians():
    model, x, y, data = _setup()
    obj = Objective("ce", 3, label_smoothing=0.1)
    J, p, lam, q, order, gz, pv = _oracle(model, x, y, obj)
    pred = order[:, 0]
    assert set(pred.tolist()) == {0, 1, 2}  # every class predicted: A_S is defined
    m = measurer(model, data, obj, NAMES + ["sharpness"], probe_chunk=7, n_per_example=25, lanczos_tol=1e-10)
    row = m.measure(["weights", "sharpness", "logit_hessian", "m_vectors", "per_example"], lr=0.1)

    assert np.allclose(row["q_lambda_sqrt"].values, ranked_q_lambda_sqrt(p).mean(0).numpy(), atol=1e-15)
    mvec = torch.stack([lam[i, 0].sqrt() * J[i] @ q[i, :, 0] for i in range(40)])  # m(x), (n, m)
    means = torch.stack([mvec[pred == c].mean(0) for c in range(3)])
    cos = torch.nn.functional.cosine_similarity(means[:, None], means[None], dim=2)
    assert np.allclose(row["m_cos"].values, cos.numpy(), atol=1e-12)
    assert row["m_class_count"].values.tolist() == [int((pred == c).sum()) for c in range(3)]
    g = torch.autograd.grad(obj.sum(model(x), y) / 40, list(model.parameters()))
    g = torch.cat([t.reshape(-1) for t in g])
    basis = torch.linalg.qr(means.T)[0]
    assert row["align_S_grad"] == pytest.approx(float((basis.T @ g).norm() / g.norm()), rel=1e-10)
    top = m.row_cache["top_eigenvector"]
    assert row["align_S_top_eig"] == pytest.approx(float((basis.T @ top).norm() / top.norm()), rel=1e-10)

    s = slice(0, 25)  # the per-example subsample: the first n_per_example examples of S
    ps, ms = pred[s], mvec[s]
    unit = ms / ms.norm(dim=1, keepdim=True)
    rho = [float(unit[ps == c].mean(0).norm()) if (ps == c).any() else math.nan for c in range(3)]
    assert np.allclose(row["m_mrl"].values, rho, rtol=1e-10, equal_nan=True)
    assert all(0 <= r <= 1 for r in rho if not math.isnan(r))
    descent = torch.stack([-J[i] @ gz[i] for i in range(25)])
    cosg = torch.nn.functional.cosine_similarity(ms, descent, dim=1)
    quart = torch.quantile(cosg, torch.tensor([0.25, 0.5, 0.75])).tolist()
    assert [row[f"cos_m_grad_q{k}"] for k in (25, 50, 75)] == pytest.approx(quart, rel=1e-10)
    jq = torch.stack([J[i] @ q[i] for i in range(25)])  # (n, m, C): columns J q_(i)
    ratio = (3**0.5) * jq[:, :, 0].norm(dim=1) / torch.stack([J[i].norm() for i in range(25)])
    expect = np.histogram(np.clip(ratio.numpy(), 0, 4), bins=JQ1_NORM_EDGES)[0]
    assert row["jq1_norm_hist"].values.tolist() == expect.tolist() and row["jq1_norm_hist"].labels[-1] == 4.0
    cos2 = torch.nn.functional.cosine_similarity(jq[:, :, 0], jq[:, :, 1], dim=1).square()  # C = 3: one pair
    assert row["jq_cos2_hist"].values.tolist() == np.histogram(cos2.numpy(), bins=COS2_EDGES)[0].tolist()
    layers = row["weight_norm_layers"]
    assert layers.labels == ["0", "2"]
    assert np.allclose(layers.values, [float(torch.cat([t.detach().reshape(-1) for t in mod.parameters()]).norm())
                                       for mod in (model[0], model[2])], rtol=1e-14)  # fmt: skip


def test_empty_classes_give_null_and_a_vector_inside_s_is_aligned():
    model, x, y, data = _setup(seed=3, n=2)
    obj = Objective("ce", 3)
    _, p, *_ = _oracle(model, x, y, obj)
    m = measurer(model, data, obj, ["m_cos", "align_S_grad", "m_mrl"], n_per_example=2)
    row = m.measure(["m_vectors", "per_example"], lr=0.1)
    counts = row["m_class_count"].values
    assert (counts == 0).any()  # 2 examples cannot cover 3 predicted classes
    empty = np.flatnonzero(counts == 0)
    assert np.isnan(row["m_cos"].values[empty]).all() and math.isnan(row["align_S_grad"])
    assert np.isnan(row["m_mrl"].values[empty]).all()
    rows = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    assert subspace_alignment(rows, rows.T @ torch.tensor([0.3, -2.0, 1.0])) == pytest.approx(1.0, rel=1e-12)
    orth = torch.linalg.qr(torch.cat([rows.T, torch.randn(50, 1)], 1))[0][:, -1]
    assert subspace_alignment(rows, orth) == pytest.approx(0.0, abs=1e-12)
