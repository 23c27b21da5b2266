"""Explicit Jacobian Regularisation (paper 000 §5.2, App. N): each variant's step against an independent
torch.func computation in float64, the penalty's unbiasedness, degenerate and limiting cases, and the cost record."""

import copy
import math

import pytest
import torch
from helpers import tiny_dataset, tiny_mlp
from torch.func import functional_call, grad

from ijr_cli.data import BatchSampler, Dataset
from ijr_cli.objectives import Objective
from ijr_cli.optim import build_sgd, sam_perturbation
from ijr_cli.train import ejr
from ijr_cli.train.step import StepSpec, accumulate_gradients, perturbed_gradient, step_passes, train_step

pytestmark = pytest.mark.usefixtures("float64")

C = 4


def _model(batch_norm=False, seed=0):
    return tiny_mlp(seed=seed, d=3, h=5, c=C, batch_norm=batch_norm)


def _data(n=12):
    return tiny_dataset(n, d=3, c=C)


def _u(step=0, seed=0):
    return ejr.logit_direction(C, seed, step, torch.Generator(), torch.float64)


class Reference:
    """The objectives of App. N written with torch.func on a copy of the model (batch-statistics BN, no buffer
    updates): independent of the training code, which uses torch.autograd on the module itself."""

    def __init__(self, model, objective, x, y):
        self.model = copy.deepcopy(model)
        for m in self.model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.track_running_stats = False
        self.objective, self.x, self.y = objective, x, y
        self.params = {k: v.detach().clone() for k, v in model.named_parameters()}

    def logits(self, p):
        return functional_call(self.model, p, (self.x,))

    def loss(self, p):
        return self.objective.mean(self.logits(p), self.y)

    def g(self, p, u):
        """<J>_B u = grad_theta (u^T <z>_B)."""
        return grad(lambda q: self.logits(q).mean(0) @ u)(p)

    def penalised(self, p, u, lam):
        return self.loss(p) + lam * sum((v**2).sum() for v in self.g(p, u).values())

    def shift(self, p, e, scale=1.0):
        return {k: p[k] + scale * e[k] for k in p}


def _step(model, variant=None, lr=0.1, momentum=0.0, wd=0.0, chunk=None, sam_rho=None, **reg):
    data = _data()
    spec = StepSpec(
        Objective("ce", C),
        BatchSampler(data.n_train, None, 0, "cpu"),
        seed=0,
        ejr=variant,
        grad_chunk=chunk,
        sam_rho=sam_rho,
        **reg,
    )
    loss = train_step(model, build_sgd(model.parameters(), lr, momentum=momentum, weight_decay=wd), data, 0, spec)
    return loss


def _close(model, expected, tol=1e-10):
    for k, p in model.named_parameters():
        assert torch.allclose(p, expected[k], rtol=tol, atol=tol), k


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("chunk", [None, 5])
def test_ejr_step_is_autograd_of_the_penalised_loss(batch_norm, chunk):
    model = _model(batch_norm)
    data = _data()
    ref = Reference(model, Objective("ce", C), data.x_train, data.y_train)
    lam, lr, wd = 0.7, 0.1, 0.01
    p = ref.params
    G = grad(lambda q: ref.penalised(q, _u(), lam))(p) if chunk is None else None
    if chunk is not None:  # with chunks, BatchNorm normalises per chunk ("ghost BN"): the reference does too

        def penalised_in_chunks(q):
            xs = ref.x
            z = torch.cat([functional_call(ref.model, q, (xs[s : s + chunk],)) for s in range(0, len(xs), chunk)])
            gq = grad(
                lambda r: (
                    torch.cat(
                        [functional_call(ref.model, r, (xs[s : s + chunk],)) for s in range(0, len(xs), chunk)]
                    ).mean(0)
                    @ _u()
                )
            )(q)
            return ref.objective.mean(z, ref.y) + lam * sum((v**2).sum() for v in gq.values())

        G = grad(penalised_in_chunks)(p)
    loss = _step(model, "ejr", lr=lr, wd=wd, chunk=chunk, lambda_reg=lam)
    _close(model, {k: p[k] - lr * (G[k] + wd * p[k]) for k in p})
    assert math.isfinite(float(loss))
    if batch_norm:  # statistics updated once, by the plain forward at theta
        plain = _model(batch_norm)
        _step(plain, None, lr=lr, chunk=chunk)
        assert torch.equal(model[1].running_mean, plain[1].running_mean)
        assert torch.equal(model[1].running_var, plain[1].running_var)
        assert int(model[1].num_batches_tracked) == int(plain[1].num_batches_tracked)


def test_ejr_penalty_weight_zero_is_the_plain_step():
    a, b = _model(), _model()
    _step(a, "ejr", lambda_reg=0.0)
    _step(b, None)
    _close(a, dict(b.named_parameters()), tol=1e-14)


def test_logit_direction_is_a_unit_vector_from_a_per_step_stream():
    u0, u0b, u1 = _u(0), _u(0), _u(1)
    assert torch.equal(u0, u0b) and not torch.equal(u0, u1)
    assert float(torch.linalg.vector_norm(u0)) == pytest.approx(1.0, abs=1e-15)
    assert not torch.equal(u0, _u(0, seed=1))


def test_penalty_is_an_unbiased_estimate_of_the_frobenius_norm():
    """C E_u ||<J> u||^2 = ||<J>||_F^2 for u ~ U(S^{C-1}); the tolerance is 5 standard errors of the sample mean,
    from the exact variance of u^T A u on the sphere, Var = 2/(C+2) [tr(A^2)/C - (tr A / C)^2], A = <J><J>^T."""
    model, data = _model(), _data()
    ref = Reference(model, Objective("ce", C), data.x_train, data.y_train)
    jac = torch.func.jacrev(lambda q: ref.logits(q).mean(0))(ref.params)  # C x (parameter shapes)
    J = torch.cat([v.reshape(C, -1) for v in jac.values()], dim=1)
    A = J @ J.T
    fro_sq = float(torch.trace(A))
    n = 3000
    gen = torch.Generator()
    samples = []
    for step in range(n):
        u = ejr.logit_direction(C, 0, step, gen, torch.float64)
        g, _ = ejr.logit_direction_gradient(model, ref.objective, data.x_train, data.y_train, None, u)
        samples.append(float(sum((t**2).sum() for t in g)))
    samples = torch.tensor(samples)
    var = 2.0 / (C + 2) * (float(torch.trace(A @ A)) / C - (fro_sq / C) ** 2)
    assert float(samples.var()) == pytest.approx(var, rel=0.15)  # the sampler is uniform on the sphere
    se = math.sqrt(var / n)
    assert abs(C * float(samples.mean()) - fro_sq) <= 5 * C * se
    assert 5 * C * se < 0.2 * fro_sq  # the test has power: the tolerance is well below the value


@pytest.mark.parametrize("batch_norm", [False, True])
def test_ejr_sam_steps_with_the_gradient_at_theta_plus_rho_normalised_Ju(batch_norm):
    model = _model(batch_norm)
    data = _data()
    ref = Reference(model, Objective("ce", C), data.x_train, data.y_train)
    rho, lr, mom, wd = 0.5, 0.1, 0.9, 5e-4
    p, u = ref.params, _u()
    g = ref.g(p, u)
    norm = math.sqrt(sum(float((v**2).sum()) for v in g.values()))
    G = grad(ref.loss)(ref.shift(p, g, rho / norm))
    loss = _step(model, "ejr_sam", lr=lr, momentum=mom, wd=wd, rho_reg=rho)
    _close(model, {k: p[k] - lr * (G[k] + wd * p[k]) for k in p})
    assert float(loss) == pytest.approx(float(ref.loss(p)), rel=1e-12)  # the batch loss reported is at theta
    if batch_norm:
        assert int(model[1].num_batches_tracked) == 1


def test_ejr_sam_perturbation_is_rho_times_the_normalised_Ju():
    model, data = _model(), _data()
    ref = Reference(model, Objective("ce", C), data.x_train, data.y_train)
    g_ref = ref.g(ref.params, _u())
    g, _ = ejr.logit_direction_gradient(model, ref.objective, data.x_train, data.y_train, None, _u())
    params = list(model.parameters())
    e = sam_perturbation(params, g, 1.7)
    norm = math.sqrt(sum(float((v**2).sum()) for v in g_ref.values()))
    for (k, _), ek in zip(model.named_parameters(), e):
        assert torch.allclose(ek, 1.7 * g_ref[k] / norm, rtol=1e-12, atol=1e-15)
    assert float(torch.linalg.vector_norm(torch.cat([t.flatten() for t in e]))) == pytest.approx(1.7, rel=1e-12)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_ejr_sam_with_rho_zero_is_the_plain_step(batch_norm):
    a, b = _model(batch_norm), _model(batch_norm)
    la = _step(a, "ejr_sam", rho_reg=0.0)
    lb = _step(b, None)
    assert float(la) == pytest.approx(float(lb), rel=1e-14)
    _close(a, dict(b.named_parameters()), tol=1e-14)
    c = _model(batch_norm)
    _step(c, "ejr_sam", rho_reg=1e-7)  # and the step is continuous in rho
    _close(c, dict(b.named_parameters()), tol=1e-7)
    if batch_norm:
        assert torch.equal(a[1].running_mean, b[1].running_mean)


def test_degenerate_Ju_zero_gives_the_plain_step_without_dividing_by_zero():
    """A bias-free linear model on the batch {x, -x}: <z>_B = 0 for every theta, so <J>_B u = 0, while the loss
    gradient is not zero (the two labels differ)."""
    x = torch.tensor([[1.0, -2.0, 0.5], [-1.0, 2.0, -0.5]])
    data = Dataset("t", x, torch.tensor([0, 1]), x, torch.tensor([0, 1]), C)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, C, bias=False))

    results = []
    for variant, reg in (("ejr_sam", {"rho_reg": 2.0}), ("ejr_v2", {"rho_reg": 2.0, "mu_reg": 0.5}), (None, {})):
        m = model()
        spec = StepSpec(Objective("ce", C), BatchSampler(2, None, 0, "cpu"), seed=0, ejr=variant, **reg)
        train_step(m, build_sgd(m.parameters(), 0.1), data, 0, spec)
        assert torch.isfinite(m[0].weight).all()
        results.append(m[0].weight.detach().clone())
    assert not torch.equal(results[2], model()[0].weight)  # the plain step moved
    assert torch.allclose(results[0], results[2], rtol=0, atol=1e-15)
    assert torch.allclose(results[1], results[2], rtol=0, atol=1e-15)  # mu u^T<z> has zero gradient here too


def test_ejr_v2_gradient_adds_mu_Ju_at_the_perturbed_point():
    model = _model()
    data = _data()
    ref = Reference(model, Objective("ce", C), data.x_train, data.y_train)
    rho, mu, lr = 0.5, 0.3, 0.1
    p, u = ref.params, _u()
    g = ref.g(p, u)
    norm = math.sqrt(sum(float((v**2).sum()) for v in g.values()))
    tilde = ref.shift(p, g, rho / norm)
    G = grad(lambda q: ref.loss(q) + mu * (ref.logits(q).mean(0) @ u))(tilde)
    _step(model, "ejr_v2", lr=lr, rho_reg=rho, mu_reg=mu)
    _close(model, {k: p[k] - lr * G[k] for k in p})
    sam = _model()
    _step(sam, "ejr_sam", lr=lr, rho_reg=rho)
    g_tilde = ref.g(tilde, u)  # the difference from ejr_sam is exactly lr mu <J>u at theta~
    for (k, a), (_, b) in zip(sam.named_parameters(), model.named_parameters()):
        assert torch.allclose(a - b, lr * mu * g_tilde[k], rtol=1e-9, atol=1e-13)


def test_ejr_v2_first_order_expansion_of_app_n():
    """App. N Eq. 40-43: L~(theta + rho g/||g||) = L~(theta) + rho grad L . g/||g|| + mu rho ||g|| + O(rho^2),
    with L~ = L_B + mu u^T <z>_B. The value is the one the training step's perturbed pass computes."""
    model, data = _model(), _data()
    obj, mu, u = Objective("ce", C), 0.3, _u()
    x, y = data.x_train, data.y_train
    params = list(model.parameters())
    g, loss = ejr.logit_direction_gradient(model, obj, x, y, None, u)
    gnorm = float(torch.linalg.vector_norm(torch.cat([t.flatten() for t in g])))
    grad_l = torch.autograd.grad(obj.mean(model(x), y), params)
    slope = sum(float((a * b).sum()) for a, b in zip(grad_l, g)) / gnorm
    with torch.no_grad():
        l_tilde = float(loss) + mu * float(model(x).mean(0) @ u)

    def residual(rho):
        value = perturbed_gradient(
            model,
            params,
            sam_perturbation(params, g, rho),
            lambda: accumulate_gradients(model, obj, x, y, None, None, mu * u),
        )
        return float(value) - (l_tilde + rho * slope + mu * rho * gnorm)

    r = [residual(rho) for rho in (0.02, 0.01, 0.005)]
    assert abs(r[0]) < 0.05 * 0.02 * (abs(slope) + mu * gnorm)  # small against each first-order term
    assert r[0] / r[1] == pytest.approx(4.0, rel=0.1) and r[1] / r[2] == pytest.approx(4.0, rel=0.1)  # O(rho^2)


@pytest.mark.parametrize(
    "variant,chunk,sam",
    [
        (None, None, False),
        ("ejr", None, False),
        ("ejr", 5, False),
        ("ejr_sam", None, False),
        ("ejr_v2", 5, False),
        (None, None, True),
        ("ejr", None, True),
    ],
)
def test_recorded_passes_are_the_passes_made(variant, chunk, sam, monkeypatch):
    """status.json's `step_passes` against what one training step actually runs: forward calls of the model
    and autograd calls (backward + double backward), per chunk; create_graph calls = double backwards."""
    model, data = _model(), _data()
    forwards = []
    model.register_forward_hook(lambda *a: forwards.append(1))
    calls = {"autograd": 0, "create_graph": 0}
    real_grad, real_backward = torch.autograd.grad, torch.autograd.backward

    def counting_grad(*a, **k):
        calls["autograd"] += 1
        calls["create_graph"] += bool(k.get("create_graph"))
        return real_grad(*a, **k)

    def counting_backward(*a, **k):
        calls["autograd"] += 1
        return real_backward(*a, **k)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(torch.autograd, "backward", counting_backward)
    reg = {"ejr": {"lambda_reg": 0.1}, "ejr_sam": {"rho_reg": 1.0}, "ejr_v2": {"rho_reg": 1.0, "mu_reg": 0.1}}
    spec = StepSpec(
        Objective("ce", C),
        BatchSampler(data.n_train, None, 0, "cpu"),
        seed=0,
        ejr=variant,
        grad_chunk=chunk,
        sam_rho=0.1 if sam else None,
        **reg.get(variant, {}),
    )
    train_step(model, build_sgd(model.parameters(), 0.1), data, 0, spec)
    passes = step_passes(spec)
    n_chunks = passes.get("chunks", 1)
    assert n_chunks == (1 if chunk is None else math.ceil(12 / chunk))
    assert len(forwards) == passes["forward"] * n_chunks
    assert calls["autograd"] == (passes["backward"] + passes["double_backward"]) * n_chunks
    assert calls["create_graph"] == passes["double_backward"] * n_chunks
