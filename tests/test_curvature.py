"""Curvature, impurity and Jacobians against exact float64 computations on tiny models (SCIENCE.md identities)."""

import copy

import pytest
import torch
from helpers import tiny_data as _data
from helpers import tiny_mlp as _mlp
from torch.func import functional_call, hessian, jacrev

from ijr_cli.curvature.impurity import gini, top_impurity, top_impurity_eigvalsh
from ijr_cli.curvature.jacobians import (
    gram_summaries,
    input_jacobian_norms,
    mean_jacobian_gram,
    mean_jacobian_top_singular,
    mean_jacobian_u_norm_sq,
)
from ijr_cli.curvature.lanczos import lanczos_top
from ijr_cli.curvature.operators import gauss_newton_operator, hessian_operator, loss_gradient
from ijr_cli.curvature.params import ParameterVector
from ijr_cli.objectives import Objective

pytestmark = pytest.mark.usefixtures("float64")  # conftest.py: exact comparisons in float64


def _dense(op, dim):
    return torch.stack([op(e) for e in torch.eye(dim)], dim=1)


def _exact_hessian(model, x, y, obj):
    pv = ParameterVector(model)
    return hessian(lambda f: obj.sum(functional_call(model, pv.unflatten(f), (x,)), y) / x.shape[0])(pv.flat_values())


def _exact_ggn(model, x, obj):
    pv = ParameterVector(model)
    j = jacrev(lambda f: functional_call(model, pv.unflatten(f), (x,)))(pv.flat_values())  # (n, C, m)
    z = model(x)
    if obj.kind == "mse":
        m = torch.eye(z.shape[1]).expand(z.shape[0], -1, -1)
    else:
        p = torch.softmax(z, 1)
        m = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("nci,ncd,ndj->ij", j, m, j) / x.shape[0], j


# ------------------------------------------------------------------------------------------------ Lanczos


def _symmetric(eigs, seed=0):
    d = len(eigs)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q @ torch.diag(torch.as_tensor(eigs)) @ q.T


def test_lanczos_returns_the_algebraic_top_when_lambda_min_dominates():
    eigs = torch.cat([torch.tensor([-9.0, -7.5]), torch.linspace(-1, 0.5, 40), torch.tensor([0.9, 1.3])])
    a = _symmetric(eigs)
    r = lanczos_top(
        lambda v: a @ v, 44, k=2, tol=1e-10, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert torch.allclose(r.eigenvalues, torch.tensor([1.3, 0.9]), rtol=1e-8)
    actual = torch.linalg.vector_norm(a @ r.eigenvectors - r.eigenvectors * r.eigenvalues, dim=0) / r.eigenvalues.abs()
    assert torch.allclose(r.residuals, actual, rtol=1e-3, atol=1e-12) and r.converged


def test_lanczos_warm_start_and_exhaustion():
    a = _symmetric(torch.linspace(0, 1, 30).pow(4) * 10)
    cold = lanczos_top(lambda v: a @ v, 30, tol=1e-6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    warm = lanczos_top(lambda v: a @ v, 30, tol=1e-6, dtype=torch.float64, v0=cold.eigenvectors[:, 0])
    assert warm.num_products < cold.num_products and warm.eigenvalues[0] == pytest.approx(10.0, rel=1e-6)
    small = lanczos_top(lambda v: torch.diag(torch.tensor([3.0, -4.0])) @ v, 2, k=2, dtype=torch.float64)
    assert small.eigenvalues.tolist() == pytest.approx([3.0, -4.0]) and small.num_products <= 2
    with pytest.raises(ValueError):
        lanczos_top(lambda v: v, 3, k=4)


# ------------------------------------------------------------------------------------- Hessian / Gauss-Newton


@pytest.mark.parametrize("kind,smoothing", [("ce", 0.0), ("ce", 0.2), ("mse", 0.0)])
@pytest.mark.parametrize("path", ["forward_over_reverse", "double_backward", "cached_double_backward", "auto"])
def test_hvp_matches_the_dense_hessian(kind, smoothing, path):
    model, (x, y) = _mlp(), _data()
    obj = Objective(kind, 3, label_smoothing=smoothing, target_scale=1.5)
    op = hessian_operator(model, x, y, obj, chunk=4, path=path)  # uneven chunks: 4 + 4 + 3
    h = _exact_hessian(model, x, y, obj)
    assert torch.allclose(_dense(op, op.dim), h, rtol=1e-10, atol=1e-13)


def test_sharpness_and_top_k_match_eigvalsh():
    model, (x, y) = _mlp(seed=3, act=torch.nn.ReLU), _data()
    obj = Objective("ce", 3)
    h = _exact_hessian(model, x, y, obj)
    ref = torch.linalg.eigvalsh(h).flip(0)[:3]
    op = hessian_operator(model, x, y, obj, chunk=5)
    r = lanczos_top(op, op.dim, k=3, tol=1e-9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(r.eigenvalues, ref, rtol=1e-6)


def test_gauss_newton_matches_dense_and_linear_softmax_regression_has_h_equal_g():
    model, (x, y) = _mlp(), _data()
    for kind in ("ce", "mse"):
        obj = Objective(kind, 3)
        g_ref, _ = _exact_ggn(model, x, obj)
        op = gauss_newton_operator(model, x, y, obj, chunk=4)
        assert torch.allclose(_dense(op, op.dim), g_ref, rtol=1e-10, atol=1e-13)
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)
    obj = Objective("ce", 3)
    h = _dense(hessian_operator(linear, x, y, obj), 15)
    g = _dense(gauss_newton_operator(linear, x, y, obj), 15)
    assert torch.allclose(h, g, rtol=1e-10, atol=1e-13)


def test_linear_mse_hessian_is_xtx_kron_identity():
    """Cohen's convention: L = 1/(2N) sum ||W x - y||^2 has H = I_C (x) X^T X / N (W row-major)."""
    x, y = _data(n=7)
    linear = torch.nn.Linear(4, 3, bias=False)
    h = _dense(hessian_operator(linear, x, y, Objective("mse", 3)), 12)
    assert torch.allclose(h, torch.kron(torch.eye(3), x.T @ x / 7), rtol=1e-12, atol=1e-14)


def test_ghost_batchnorm_chunks_give_the_per_chunk_answer_and_leave_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    model[1].running_mean.fill_(0.3)
    x, y = _data(n=12)
    obj = Objective("ce", 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op = hessian_operator(model, x, y, obj, chunk=4, bn_mode="train", cache_graph=False)
    assert op.path == "double_backward"
    h = _dense(op, op.dim)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    ghost = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(ghost)  # batch statistics only, no running buffers
    ghost.train()
    pv = ParameterVector(ghost)

    def chunk_loss(flat, i):
        return obj.sum(functional_call(ghost, pv.unflatten(flat), (x[i : i + 4],)), y[i : i + 4]) / 4

    # Reference: torch.autograd.functional.hessian (row-by-row double backward). NOT torch.func.hessian: its
    # vmapped forward-over-reverse gave a Hessian off by 0.5 through batch-statistics BatchNorm (torch 2.14.1),
    # while central differences agree with this reference and with ours.
    ref = (
        sum(torch.autograd.functional.hessian(lambda f: chunk_loss(f, i), pv.flat_values()) * 4 for i in (0, 4, 8)) / 12
    )
    assert torch.allclose(h, ref, rtol=1e-10, atol=1e-13)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
    grad_at = lambda f, i: torch.autograd.functional.jacobian(lambda t: chunk_loss(t, i), f)  # noqa: E731
    f0, eps = pv.flat_values(), 1e-5
    fd = sum((grad_at(f0 + eps * v, i) - grad_at(f0 - eps * v, i)) / (2 * eps) * 4 for i in (0, 4, 8)) / 12
    assert torch.allclose(h @ v, fd, atol=1e-6)
    cached = hessian_operator(model, x, y, obj, chunk=4, bn_mode="train")
    assert cached.path == "cached_double_backward"
    assert torch.allclose(_dense(cached, op.dim), h, rtol=1e-10, atol=1e-13)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    whole = _dense(hessian_operator(model, x, y, obj, chunk=None, bn_mode="train"), op.dim)
    assert not torch.allclose(whole, h, atol=1e-6)  # the chunking is a real, recorded choice


def test_loss_gradient_matches_autograd():
    model, (x, y) = _mlp(), _data()
    obj = Objective("ce", 3, label_smoothing=0.1)
    g = loss_gradient(model, x, y, obj, chunk=3)
    ref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(obj.sum(model(x), y) / 11, list(model.parameters()))])
    assert torch.allclose(g, ref, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------- impurity


def test_impurity_bisection_agrees_with_eigvalsh_and_theorem_1():
    g = torch.Generator().manual_seed(0)
    for c in (2, 3, 10, 100):
        p = torch.softmax(torch.randn(500, c, generator=g) * torch.rand(500, 1, generator=g) * 8, dim=1)
        lam = top_impurity(p)
        assert torch.allclose(lam, top_impurity_eigvalsh(p), rtol=1e-9, atol=1e-15)
        srt = p.sort(dim=1, descending=True).values
        p1, p2 = srt[:, 0], srt[:, 1]
        eps = 1e-12
        assert (p2 <= lam + eps).all() and (lam <= p1 + eps).all()
        gini_p1 = 2 * p1 * (1 - p1)
        assert (0.5 * gini_p1 <= lam + eps).all() and (lam <= gini_p1 + eps).all()
        gi = gini(p)
        assert (gi / (c - 1) <= lam + eps).all() and (lam <= gi + eps).all()
        m = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        assert torch.allclose(torch.linalg.eigvalsh(m)[:, 0], torch.zeros(500), atol=1e-12)  # lambda_(C) = 0


def test_impurity_identities():
    for c in (2, 5, 10):
        assert torch.allclose(top_impurity(torch.full((1, c), 1.0 / c)), torch.tensor([1.0 / c]), rtol=1e-12)
        assert torch.allclose(gini(torch.full((1, c), 1.0 / c)), torch.tensor([1 - 1.0 / c]), rtol=1e-12)
    q = torch.tensor([0.01, 0.3, 0.5, 0.77, 0.999])
    p = torch.stack([q, 1 - q], dim=1)
    assert torch.allclose(top_impurity(p), 2 * q * (1 - q), rtol=1e-12)
    assert torch.allclose(gini(p), 2 * q * (1 - q), rtol=1e-12)


@pytest.mark.parametrize("trained", [False, True])
def test_theorem_2_gauss_newton_bounded_by_impurity_weighted_jacobians(trained):
    model, (x, y) = _mlp(seed=5), _data(n=9)
    obj = Objective("ce", 3)
    if trained:
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(200):
            opt.zero_grad()
            (obj.sum(model(x), y) / 9).backward()
            opt.step()
    g, j = _exact_ggn(model, x, obj)
    lam = top_impurity(torch.softmax(model(x), 1))
    bound = (lam * torch.linalg.matrix_norm(j, ord=2) ** 2).mean()
    assert torch.linalg.eigvalsh(g)[-1] <= bound * (1 + 1e-12)


# --------------------------------------------------------------------------------------------- Jacobians


def test_mean_jacobian_gram_and_algorithm_2():
    model, (x, _) = _mlp(seed=2), _data()
    pv = ParameterVector(model)
    jm = jacrev(lambda f: functional_call(model, pv.unflatten(f), (x,)).mean(0))(pv.flat_values()).T  # (m, C)
    k, passes = mean_jacobian_gram(model, x, chunk=4)
    s = gram_summaries(k)
    u = torch.ones(3) / 3**0.5
    assert s["jac_op_norm"] == pytest.approx(float(torch.linalg.matrix_norm(jm, ord=2)), rel=1e-10)
    assert s["jac_fro_sq"] == pytest.approx(float((jm**2).sum()), rel=1e-10)
    assert s["jac_u_norm_sq"] == pytest.approx(float((jm @ u).square().sum()), rel=1e-10)
    assert passes == 3 * 3  # C backward passes per chunk
    norm, _ = mean_jacobian_top_singular(
        model, x, chunk=4, tol=1e-13, max_iters=500, generator=torch.Generator().manual_seed(0)
    )
    assert norm == pytest.approx(s["jac_op_norm"], rel=1e-6)
    u_norm_sq, u_passes = mean_jacobian_u_norm_sq(model, x, chunk=4)
    assert u_norm_sq == pytest.approx(s["jac_u_norm_sq"], rel=1e-10) and u_passes == 3


def test_u_is_built_in_float64_for_a_float64_run():
    """||<J> u||^2 to the last digits in float64 (u = 1/sqrt(C) built in float32 carried a 1e-8 error)."""
    model, (x, _) = _mlp(seed=2), _data()
    pv = ParameterVector(model)
    jm = jacrev(lambda f: functional_call(model, pv.unflatten(f), (x,)).mean(0))(pv.flat_values()).T
    exact = float((jm @ torch.full((3,), 3**-0.5, dtype=torch.float64)).square().sum())
    torch.set_default_dtype(torch.float32)  # as in a trainer.dtype=float64 run (the fixture restores it)
    assert mean_jacobian_u_norm_sq(model, x, chunk=4)[0] == pytest.approx(exact, rel=1e-14)


def test_many_classes_use_algorithm_2_and_one_backward_for_u(float64):
    """C > 100: no Gram matrix; ||<J>||_2 by power iteration, ||<J> u||^2 by one backward, ||<J>||_F^2 absent."""
    import math

    from helpers import measurer

    from ijr_cli.data import Dataset

    torch.manual_seed(0)
    model = _mlp(c=101)
    x, y = _data(n=9, c=101)
    data = Dataset("t", x, y, x[:2], y[:2], 101)
    m = measurer(
        model,
        data,
        Objective("ce", 101),
        ["jac_op_norm", "jac_u_norm_sq", "jac_fro_sq", "ijr_proxy"],
        init_params=torch.zeros(1),
        probe_chunk=4,
    )
    row = m.measure(["jacobian"], lr=0.1)
    k, _ = mean_jacobian_gram(model, x, chunk=4)
    exact = gram_summaries(k)
    assert row["jac_op_norm"] == pytest.approx(exact["jac_op_norm"], rel=1e-5)
    assert row["jac_u_norm_sq"] == pytest.approx(exact["jac_u_norm_sq"], rel=1e-10)
    assert math.isnan(row["jac_fro_sq"])
    with torch.no_grad():
        impurity_mean = float(top_impurity_eigvalsh(torch.softmax(model(x), 1)).mean())
    assert row["ijr_proxy"] == pytest.approx(impurity_mean * exact["jac_u_norm_sq"], rel=1e-9)


def test_input_jacobian_norms_match_jacrev_and_restore_mode():
    model, (x, _) = _mlp(seed=4), _data(n=6)
    model.train()
    got = input_jacobian_norms(model, x, chunk=4)
    ref = torch.stack([torch.linalg.matrix_norm(jacrev(lambda xi: torch.softmax(model(xi), 0))(xi), ord=2) for xi in x])
    assert torch.allclose(got, ref, rtol=1e-10) and model.training


def test_lanczos_on_a_non_finite_operator_returns_nan_without_raising():
    r = lanczos_top(lambda v: v * float("nan"), 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.isnan(r.eigenvalues).all() and not r.converged


def test_train_mode_batchnorm_on_the_torch_func_paths():
    """Gauss-Newton, forward-over-reverse HVP and Algorithm 2 with ghost BN agree with autograd references."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = _data(n=12)
    obj = Objective("ce", 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    h_ref = _dense(hessian_operator(model, x, y, obj, chunk=4, bn_mode="train", path="double_backward"), 53)
    h_fr = _dense(hessian_operator(model, x, y, obj, chunk=4, bn_mode="train", path="forward_over_reverse"), 53)
    assert torch.allclose(h_fr, h_ref, rtol=1e-10, atol=1e-13)
    g = _dense(gauss_newton_operator(model, x, y, obj, chunk=4, bn_mode="train"), 53)
    ghost = copy.deepcopy(model)
    torch.func.replace_all_batch_norm_modules_(ghost)
    ghost.train()
    g_ref = sum(_exact_ggn(ghost, x[i : i + 4], obj)[0] * 4 for i in (0, 4, 8)) / 12
    assert torch.allclose(g, g_ref.detach(), rtol=1e-10, atol=1e-13)
    k, _ = mean_jacobian_gram(model, x, chunk=4, bn_mode="train")
    norm, _ = mean_jacobian_top_singular(
        model, x, chunk=4, bn_mode="train", tol=1e-13, max_iters=500, generator=torch.Generator().manual_seed(0)
    )
    assert norm == pytest.approx(gram_summaries(k)["jac_op_norm"], rel=1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ------------------------------------------------------------------------------- every operator on every case
@pytest.mark.parametrize("path", ["cached_double_backward", "forward_over_reverse", "double_backward"])
def test_every_hvp_path_is_the_dense_hessian_on_every_case(oracle_case, path):
    model, x, y, obj, chunk = oracle_case
    mode, state = model.training, {k: v.clone() for k, v in model.state_dict().items()}
    op = hessian_operator(model, x, y, obj, chunk=chunk, path=path)
    assert torch.allclose(_dense(op, op.dim), _exact_hessian(model, x, y, obj), rtol=1e-10, atol=1e-13)
    assert model.training == mode and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_gauss_newton_gradient_and_mean_jacobian_on_every_case(oracle_case):
    model, x, y, obj, chunk = oracle_case
    op = gauss_newton_operator(model, x, y, obj, chunk=chunk)
    g_ref, j = _exact_ggn(model, x, obj)
    assert torch.allclose(_dense(op, op.dim), g_ref, rtol=1e-10, atol=1e-13)
    grad_ref = torch.autograd.grad(obj.sum(model(x), y) / x.shape[0], list(model.parameters()))
    assert torch.allclose(
        loss_gradient(model, x, y, obj, chunk=chunk),
        torch.cat([t.reshape(-1) for t in grad_ref]),
        rtol=1e-12,
        atol=1e-15,
    )
    k, passes = mean_jacobian_gram(model, x, chunk=chunk)
    jm = j.mean(0).T  # (m, C): <J>
    assert torch.allclose(k, jm.T @ jm, rtol=1e-10, atol=1e-13) and passes == 3 * -(-x.shape[0] // chunk)
