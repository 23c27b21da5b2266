"""Losses against their formulas (SCIENCE.md Notation), mixup, schedules, stability thresholds, SAM's step."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_dataset, tiny_mlp

from ijr_cli.data import BatchSampler
from ijr_cli.models import frozen_batchnorm_statistics
from ijr_cli.objectives import Objective, mixup
from ijr_cli.optim import build_sgd, lr_factor, sam_perturbation, stability_threshold
from ijr_cli.train.step import StepSpec, train_step

pytestmark = pytest.mark.usefixtures("float64")  # conftest.py: exact comparisons in float64


def test_mse_is_cohen_convention_not_torch_mseloss():
    z, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    obj = Objective("mse", 4, target_scale=2.0)
    expect = sum(0.5 * sum((z[i, c] - (2.0 if c == y[i] else 0.0)) ** 2 for c in range(4)) for i in range(6))
    assert torch.allclose(obj.sum(z, y), torch.as_tensor(expect), rtol=1e-12)
    torch_mean = F.mse_loss(z, 2.0 * F.one_hot(y, 4).double())  # divides by N*C
    assert torch.allclose(obj.sum(z, y) / 6, torch_mean * 4 / 2, rtol=1e-12)


def test_label_smoothing_ce_equals_soft_target_formula():
    z, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    obj = Objective("ce", 3, label_smoothing=0.2)
    t = 0.8 * F.one_hot(y, 3).double() + 0.2 / 3
    expect = -(t * torch.log_softmax(z, 1)).sum()
    assert torch.allclose(obj.sum(z, y), expect, rtol=1e-12)
    assert torch.allclose(obj.sum(z, y, targets=obj.soft_targets(y, z.dtype)), expect, rtol=1e-12)


def test_label_smoothing_with_mse_smooths_targets():
    z, y = torch.randn(2, 3), torch.tensor([1, 2])
    obj = Objective("mse", 3, label_smoothing=0.3, target_scale=1.5)
    t = 1.5 * (0.7 * F.one_hot(y, 3).double() + 0.1)
    assert torch.allclose(obj.sum(z, y), 0.5 * ((z - t) ** 2).sum(), rtol=1e-12)


def test_mixup_is_a_convex_combination_with_a_permutation():
    x, t = torch.randn(6, 3), torch.eye(6)
    g = torch.Generator().manual_seed(0)
    xm, tm = mixup(x, t, 0.3, g)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(xm, 0.3 * x + 0.7 * x[perm]) and torch.allclose(tm, 0.3 * t + 0.7 * t[perm])
    assert torch.allclose(tm.sum(1), torch.ones(6))


def test_schedules():
    assert lr_factor(5, 100, "constant") == 1.0
    f = [lr_factor(s, 100, "step", gamma=0.2, milestones=[0.3, 0.6, 0.8]) for s in (0, 29, 30, 59, 60, 80, 99)]
    assert f == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.008, 0.008])
    assert lr_factor(0, 100, "cosine") == 1.0
    assert lr_factor(50, 100, "cosine", min_lr_factor=0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, "cosine", min_lr_factor=0.1) == pytest.approx(0.1)
    assert [lr_factor(s, 100, "constant", warmup_steps=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_stability_thresholds():
    assert stability_threshold(0.1) == pytest.approx(20.0)
    assert stability_threshold(0.1, momentum=0.9) == pytest.approx(38.0)
    assert stability_threshold(0.1, momentum=0.9, nesterov=True) == pytest.approx(38.0 / 2.8)


def test_heavy_ball_threshold_is_the_divergence_edge_on_a_quadratic():
    """GD with momentum on L = a/2 x^2 is stable iff a < (2 + 2 beta)/lr (the threshold's definition)."""
    lr, beta = 0.1, 0.5
    edge = stability_threshold(lr, beta)
    for a, stable in ((0.99 * edge, True), (1.01 * edge, False)):
        x = torch.tensor([1.0], requires_grad=True)
        opt = build_sgd([x], lr, momentum=beta)
        for _ in range(3000):
            opt.zero_grad()
            (0.5 * a * x.square()).sum().backward()
            opt.step()
        assert (abs(float(x.detach())) < 1.0) == stable


def _tiny(batch_norm=False):
    return tiny_mlp(seed=0, d=3, h=4, c=2, batch_norm=batch_norm)


def _dataset(n=8):
    return tiny_dataset(n, d=3, c=2)


def test_sam_step_is_gradient_at_the_perturbed_point():
    data, obj = _dataset(), Objective("ce", 2)
    model = _tiny()
    ref = _tiny()
    params = list(ref.parameters())
    loss = obj.sum(ref(data.x_train), data.y_train) / 8
    g = torch.autograd.grad(loss, params)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    shifted = [p + 0.3 * gi / norm for p, gi in zip(params, g)]
    loss2 = (
        obj.sum(
            torch.func.functional_call(ref, dict(zip([n for n, _ in ref.named_parameters()], shifted)), data.x_train),
            data.y_train,
        )
        / 8
    )
    g2 = torch.autograd.grad(loss2, params)
    expect = [p.detach() - 0.1 * gi for p, gi in zip(params, g2)]
    opt = build_sgd(model.parameters(), lr=0.1)
    spec = StepSpec(objective=obj, sampler=BatchSampler(8, None, 0, "cpu"), seed=0, sam_rho=0.3)
    train_step(model, opt, data, 0, spec)
    for p, e in zip(model.parameters(), expect):
        assert torch.allclose(p, e, rtol=1e-10, atol=1e-12)


def test_sam_small_rho_is_the_plain_step_and_zero_gradient_is_safe():
    data, obj = _dataset(), Objective("ce", 2)
    a, b = _tiny(), _tiny()
    sampler = BatchSampler(8, None, 0, "cpu")
    train_step(a, build_sgd(a.parameters(), 0.1), data, 0, StepSpec(obj, sampler, 0, sam_rho=1e-9))
    train_step(b, build_sgd(b.parameters(), 0.1), data, 0, StepSpec(obj, sampler, 0))
    assert all(torch.allclose(p, q, atol=1e-9) for p, q in zip(a.parameters(), b.parameters()))
    zeros = [torch.zeros(3), torch.zeros(2, 2)]
    e = sam_perturbation([torch.ones(3), torch.ones(2, 2)], zeros, 0.05)
    assert all(torch.equal(t, torch.zeros_like(t)) for t in e)
    ea = sam_perturbation([torch.full((2,), 2.0)], [torch.tensor([3.0, 4.0])], 1.0, adaptive=True)
    assert torch.allclose(ea[0], torch.tensor([12.0, 16.0]) / 10.0)  # rho T^2 g / ||T g||, T = |theta| = 2


def test_sam_updates_batchnorm_statistics_once_per_step():
    data, obj = _dataset(), Objective("ce", 2)
    sam, plain = _tiny(batch_norm=True), _tiny(batch_norm=True)
    sampler = BatchSampler(8, None, 0, "cpu")
    train_step(sam, build_sgd(sam.parameters(), 0.1), data, 0, StepSpec(obj, sampler, 0, sam_rho=0.5))
    train_step(plain, build_sgd(plain.parameters(), 0.1), data, 0, StepSpec(obj, sampler, 0))
    bn_s, bn_p = sam[1], plain[1]
    assert torch.allclose(bn_s.running_mean, bn_p.running_mean) and torch.allclose(bn_s.running_var, bn_p.running_var)
    assert int(bn_s.num_batches_tracked) == 1


def test_frozen_batchnorm_restores_buffers():
    m = _tiny(batch_norm=True)
    before = m[1].running_mean.clone()
    with frozen_batchnorm_statistics(m):
        m(torch.randn(8, 3) + 5)
    assert torch.equal(m[1].running_mean, before)


def test_momentum_weight_decay_step_matches_formula():
    data, obj = _dataset(), Objective("mse", 2)
    model = _tiny()
    theta0 = [p.detach().clone() for p in model.parameters()]
    opt = build_sgd(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    spec = StepSpec(obj, BatchSampler(8, None, 0, "cpu"), 0)
    grads = []
    for step in range(2):
        ref = _tiny()
        with torch.no_grad():
            for p, q in zip(ref.parameters(), model.parameters()):
                p.copy_(q)
        grads.append(torch.autograd.grad(obj.sum(ref(data.x_train), data.y_train) / 8, list(ref.parameters())))
        train_step(model, opt, data, step, spec)
    for i, p in enumerate(model.parameters()):
        v1 = grads[0][i] + 0.01 * theta0[i]
        theta1 = theta0[i] - 0.05 * v1
        v2 = 0.9 * v1 + grads[1][i] + 0.01 * theta1
        assert torch.allclose(p, theta1 - 0.05 * v2, rtol=1e-10, atol=1e-12)


def test_grad_chunks_give_the_one_pass_gradient():
    data, obj = _dataset(n=10), Objective("ce", 2, label_smoothing=0.1)
    a, b = _tiny(), _tiny()
    sampler = BatchSampler(10, None, 0, "cpu")
    la = train_step(a, build_sgd(a.parameters(), 0.1), data, 0, StepSpec(obj, sampler, 0))
    lb = train_step(b, build_sgd(b.parameters(), 0.1), data, 0, StepSpec(obj, sampler, 0, grad_chunk=3))
    assert math.isclose(float(la), float(lb), rel_tol=1e-12)
    assert all(torch.allclose(p, q, rtol=1e-12, atol=1e-14) for p, q in zip(a.parameters(), b.parameters()))
