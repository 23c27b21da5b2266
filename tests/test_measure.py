"""Metrics as a run records them, against exact float64 computations on the run's final parameters."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from helpers import run_in_process
from omegaconf import OmegaConf
from torch.func import functional_call, hessian, jacrev

from ijr_cli.core import metric_names as M
from ijr_cli.core.config import validate
from ijr_cli.core.errors import UserError
from ijr_cli.curvature.impurity import top_impurity_eigvalsh
from ijr_cli.curvature.params import ParameterVector
from ijr_cli.measure.schedule import Schedule
from ijr_cli.objectives import Objective
from ijr_cli.run import experiment


def test_schedule_cadences_ends_and_early_steps():
    s = Schedule({"eval": 10, "sharpness": 4}, total_steps=23, early_steps=3)
    assert s.due(0) == ["eval", "sharpness"] and s.due(8) == ["sharpness"] and s.due(20) == ["eval", "sharpness"]
    assert s.due(23) == ["eval", "sharpness"] and s.due(7) == []
    # 10 ** (i/3) for i = 0, 1, 2, rounded: 1, 2, 5
    assert sorted(p for p in range(1, 10) if "eval" in s.due(p)) == [1, 2, 5]
    for sched in (
        s,
        Schedule({"eval": 6, "sharpness": 4, "grad": 9}, total_steps=100, early_steps=4),
        Schedule({}, total_steps=7),
    ):
        assert all(sched.any_due(t) == bool(sched.due(t)) for t in range(0, 120))  # the fast path agrees


def test_a_runs_metrics_match_exact_computations(compose, tmp_path):
    over = TINY + [
        "trainer.dtype=float64",
        "model.widths=[5]",
        "loss=ce",
        "regularizer=label_smoothing",
        "metrics=full",
        "metrics.lanczos_tol=1e-10",
        "metrics.sharpness_k=2",
        "probe.n=100",
        "probe.chunk=30",
        "metrics.n_input_jac=7",
        "optimizer.momentum=0.5",
    ]
    cfg = compose(over)
    typed = OmegaConf.to_object(cfg)
    experiment.run(typed, run_dir=tmp_path / "r", config_yaml=OmegaConf.to_yaml(cfg, resolve=True), overrides=over)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    b = experiment.build(typed)  # the same data and architecture; load the final parameters
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    model = b.state.model
    model.load_state_dict(ckpt["model"])
    x, y = b.data.x_train[:100], b.data.y_train[:100]
    obj = Objective("ce", 4, label_smoothing=0.1)
    pv = ParameterVector(model)
    flat = pv.flat_values()
    h = hessian(lambda f: obj.sum(functional_call(model, pv.unflatten(f), (x,)), y) / 100)(flat)
    eig = torch.linalg.eigvalsh(h).flip(0)
    assert summary["sharpness"] == pytest.approx(float(eig[0]), rel=1e-6)
    assert summary["sharpness_k"] == pytest.approx(eig[:2].tolist(), rel=1e-6)
    assert summary["sharpness_resid"] <= 1e-9 and summary["sharpness_matvecs"] >= 1
    assert summary["threshold"] == pytest.approx(2 * 1.5 / 0.05)  # heavy ball: (2 + 2 beta) / lr
    j = jacrev(lambda f: functional_call(model, pv.unflatten(f), (x,)))(flat)  # (n, C, m)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    m = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    g = torch.einsum("nci,ncd,ndj->ij", j, m, j).detach() / 100
    assert summary["gn_sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(g)[-1]), rel=1e-6)
    jm = j.mean(0).T
    assert summary["jac_op_norm"] == pytest.approx(float(torch.linalg.matrix_norm(jm, ord=2)), rel=1e-8)
    assert summary["jac_fro_sq"] == pytest.approx(float((jm**2).sum()), rel=1e-8)
    u_norm = float((jm @ torch.ones(4, dtype=jm.dtype) / 2).square().sum())
    assert summary["jac_u_norm_sq"] == pytest.approx(u_norm, rel=1e-8)
    lam = top_impurity_eigvalsh(p)
    assert summary["impurity_mean"] == pytest.approx(float(lam.mean()), rel=1e-9)
    quartiles = torch.quantile(lam, torch.tensor([0.25, 0.5, 0.75], dtype=lam.dtype)).tolist()  # linear interp.
    assert [summary[k] for k in ("impurity_q25", "impurity_q50", "impurity_q75")] == pytest.approx(quartiles, rel=1e-9)
    assert summary["ijr_proxy"] == pytest.approx(summary["impurity_mean"] * u_norm, rel=1e-8)
    assert summary["gini_mean"] == pytest.approx(float((1 - p.square().sum(1)).mean()), rel=1e-9)
    assert summary["p1_mean"] == pytest.approx(float(p.max(1).values.mean()), rel=1e-9)
    z = model(x).detach()
    assert summary["logit_norm_mean"] == pytest.approx(float(z.norm(dim=1).mean()), rel=1e-9)
    assert summary["logit_sum_abs_mean"] == pytest.approx(float(z.sum(1).abs().mean()), rel=1e-9)
    gvec = torch.autograd.grad(obj.sum(model(x), y) / 100, list(model.parameters()))
    gflat = torch.cat([t.reshape(-1) for t in gvec])
    assert summary["grad_norm"] == pytest.approx(float(gflat.norm()), rel=1e-9)
    top = torch.linalg.eigh(h).eigenvectors[:, -1]
    assert abs(summary["cos_grad_top_eig"]) == pytest.approx(abs(float(gflat @ top / gflat.norm())), rel=1e-5)
    assert summary["cos_grad_top_eig"] >= 0  # sign-free: |cos| (an eigenvector's sign is arbitrary)
    norms = torch.stack(
        [torch.linalg.matrix_norm(jacrev(lambda xi: torch.softmax(model(xi[None])[0], 0))(xi), ord=2) for xi in x[:7]]
    ).detach()
    assert summary["input_jac_max"] == pytest.approx(float(norms.max()), rel=1e-9)
    assert summary["input_jac_mean"] == pytest.approx(float(norms.mean()), rel=1e-9)
    theta0 = experiment.build(typed).measurer.init_params
    assert summary["dist_init"] == pytest.approx(float((flat - theta0).norm()), rel=1e-9)
    assert summary["probe_n"] == 100 and summary["probe_bn_mode"] == "eval"


def test_eos_rows_carry_costs_and_cadence(compose, tmp_path):
    over = TINY + ["metrics=eos", "+metrics.every.sharpness=20", "trainer.eval_every=10"]
    run_in_process(compose, tmp_path / "r", over)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    with_sharpness = [r["step"] for r in rows if "sharpness" in r]
    assert with_sharpness == [0, 20, 40]
    assert all(r["sharpness_s"] > 0 and r["sharpness_matvecs"] >= 1 for r in rows if "sharpness" in r)
    assert [r["step"] for r in rows if "train_loss" in r] == [0, 10, 20, 30, 40]


def test_unknown_metric_cadence_key(compose):
    typed = OmegaConf.to_object(compose(TINY + ["+metrics.every.sharpnes=5"]))
    with pytest.raises(UserError, match="metrics.every has unknown key"):
        validate(typed)  # the check that ijr-train and ijr-sweep's pre-flight share


def test_the_registry_has_one_row_per_metric_group():
    from ijr_cli.core.metric_names import GROUPS, SECONDS
    from ijr_cli.measure.registry import REGISTRY

    assert set(REGISTRY) == set(GROUPS) - {"eval"}  # eval is measure.evaluate, on the full train and test sets
    for name, group in REGISTRY.items():
        assert group.name == name and group.names == GROUPS[name] and callable(group.compute) and group.cost
        assert SECONDS[name] == f"{name}_s"
    assert {n for n, g in REGISTRY.items() if g.over_probe} == {
        "probe_outputs",
        "grad",
        "sharpness",
        "gn_sharpness",
        "jacobian",
        "logit_hessian",
        "m_vectors",
    }


def test_probe_chunks_sum_is_independent_of_the_chunking_and_the_model_is_restored(float64):
    """The one probe loop: any chunking gives the same sum; the mode and BatchNorm statistics come back, also when
    the loop body raises."""
    from ijr_cli.curvature.probe import chunk_sum, probe_chunks

    torch.manual_seed(0)
    x = torch.randn(11, 4)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    sums = [
        chunk_sum(plain, 11, chunk, "eval", lambda sl: [plain(x[sl]).sum(0), x[sl].square().sum()])
        for chunk in (None, 1, 3, 4, 11, 50)
    ]
    for s in sums[1:]:
        assert torch.allclose(s[0], sums[0][0], rtol=1e-13) and torch.allclose(s[1], sums[0][1], rtol=1e-13)
    bn = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3))
    bn.train()
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with probe_chunks(bn, 11, 4, "train") as slices:
            for sl in slices:
                bn(x[sl])  # ghost BN: batch statistics per chunk, running statistics untouched
                raise RuntimeError("boom")
    assert bn.training and all(torch.equal(v, bn.state_dict()[k]) for k, v in before.items())
    bn.eval()
    with probe_chunks(bn, 11, None, "train") as slices:
        assert bn.training and slices == [slice(0, 11)]
    assert not bn.training


def test_sharpness_k_auto_tracks_every_eigenvalue_above_the_line(float64):
    """sharpness_k=auto: the eigenvalues >= track_fraction * 2/lr (dense Hessian), their count, the cap, and the
    next estimate's start (count + 1, kept in the warm state so a resumed run repeats it)."""
    from helpers import measurer, tiny_data, tiny_mlp

    from ijr_cli.curvature.params import ParameterVector
    from ijr_cli.data import Dataset
    from ijr_cli.measure.metrics import TRACK_K

    model = tiny_mlp(seed=3, act=torch.nn.ReLU)
    x, y = tiny_data()
    obj = Objective("ce", 3)
    pv = ParameterVector(model)
    h = hessian(lambda f: obj.sum(functional_call(model, pv.unflatten(f), (x,)), y) / 11)(pv.flat_values())
    eig = torch.linalg.eigvalsh(h).flip(0)
    line = float(eig[2] + eig[3]) / 2  # three eigenvalues above it
    lr = 2 * 0.5 / line  # track_fraction 0.5 of the threshold 2/lr is the line
    data = Dataset("t", x, y, x[:2], y[:2], 3)
    for cap, expect in ((10, 3), (2, 2)):
        m = measurer(model, data, obj, ["sharpness"], sharpness_k="auto", track_cap=cap, lanczos_tol=1e-10)
        row = m.measure(["sharpness"], lr=lr)
        assert row["sharpness_count"] == expect
        assert row["sharpness_k"] == pytest.approx(eig[:expect].tolist(), rel=1e-8)
        assert row["sharpness"] == pytest.approx(float(eig[0]), rel=1e-8)
        assert int(m.warm[TRACK_K]) == min(expect + 1, cap)
    m = measurer(model, data, obj, ["sharpness"], sharpness_k="auto", lanczos_tol=1e-10)
    row = m.measure(["sharpness"], lr=2 * 0.5 / (2 * float(eig[0])))  # the line above every eigenvalue
    assert row["sharpness_count"] == 0 and row["sharpness_k"] == pytest.approx([float(eig[0])], rel=1e-8)


def test_batch_sharpness_and_batch_lambda_max_against_dense_minibatch_hessians(float64):
    """E_B[g_B^T H_B g_B / ||g_B||^2], E_B[lambda_max(H_B)] and their standard errors from dense float64 minibatch
    Hessians, on the minibatches of the (seed, step) stream; the training RNG is not touched; full batch: one batch."""
    from helpers import measurer, tiny_data, tiny_mlp

    from ijr_cli.curvature.params import ParameterVector
    from ijr_cli.data import Dataset
    from ijr_cli.measure.stochastic import minibatch_indices

    model = tiny_mlp(seed=5)
    x, y = tiny_data(n=40)
    obj = Objective("ce", 3, label_smoothing=0.1)
    data = Dataset("t", x, y, x[:2], y[:2], 3)
    pv = ParameterVector(model)
    flat = pv.flat_values()

    def dense(xb, yb):
        loss = lambda f: obj.sum(functional_call(model, pv.unflatten(f), (xb,)), yb) / xb.shape[0]  # noqa: E731
        return torch.func.grad(loss)(flat), hessian(loss)(flat)

    names = ["batch_sharpness", "batch_lambda_max"]
    for batch_size, batches in ((8, 6), (None, 4)):
        m = measurer(model, data, obj, names, batch_size=batch_size, batch_sharpness_batches=batches,
                     lanczos_tol=1e-10, probe_chunk=3, seed=7)  # fmt: skip
        state = torch.get_rng_state()
        row = m.measure(names, lr=0.1, step=30)
        assert torch.equal(torch.get_rng_state(), state)
        quad, tops = [], []
        for idx in minibatch_indices(40, batch_size, batches, seed=7, step=30):
            g, h = dense(x[idx], y[idx])
            quad.append(float(g @ h @ g / (g @ g)))
            tops.append(float(torch.linalg.eigvalsh(h)[-1]))
        assert len(quad) == (batches if batch_size else 1)
        q, t = torch.tensor(quad), torch.tensor(tops)
        se = lambda v: float(v.std() / len(v) ** 0.5) if len(v) > 1 else 0.0  # noqa: E731
        quad_mean = float(q.mean())
        assert row["batch_sharpness"] == pytest.approx(quad_mean, rel=1e-10)
        assert row["batch_sharpness_se"] == pytest.approx(se(q), rel=1e-8, abs=1e-15)
        assert row["batch_lambda_max"] == pytest.approx(float(t.mean()), rel=1e-8)
        assert row["batch_lambda_max_se"] == pytest.approx(se(t), rel=1e-6, abs=1e-12)
        assert row["batch_sharpness"] <= row["batch_lambda_max"] * (1 + 1e-10)  # a Rayleigh quotient of each H_B
        uncached = measurer(model, data, obj, names[:1], batch_size=batch_size, batch_sharpness_batches=batches,
                            probe_chunk=3, seed=7, probe_cache_graph=False)  # fmt: skip
        assert uncached.measure(names[:1], lr=0.1, step=30)["batch_sharpness"] == pytest.approx(quad_mean, rel=1e-10)
    a = minibatch_indices(40, 8, 3, seed=7, step=30)
    assert all(torch.equal(u, v) for u, v in zip(a, minibatch_indices(40, 8, 3, seed=7, step=30)))
    assert not torch.equal(a[0], minibatch_indices(40, 8, 3, seed=7, step=31)[0])
    assert all(len(set(i.tolist())) == 8 for i in a)  # without replacement


def test_trajectory_sketch_is_a_seeded_linear_embedding_and_is_recorded_densely_first(compose, tmp_path):
    """The sketch: linear, the same from the same seed, a Gaussian matrix when m <= 16 d, distances kept to within
    the JL error; in a run: every step up to trajectory_steps, then the group's cadence, in arrays.bin."""
    from ijr_cli.core.arrays import read_arrays
    from ijr_cli.measure.schedule import Schedule
    from ijr_cli.measure.trajectory import ParameterSketch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20_000, generator=g), torch.randn(20_000, generator=g)
    s = ParameterSketch(20_000, 256, seed=3, device=torch.device("cpu"), dtype=torch.float64)
    assert torch.allclose(s(a + 2 * b), s(a) + 2 * s(b), atol=1e-9) and s.buckets == 4096
    assert torch.equal(s(a), ParameterSketch(20_000, 256, 3, torch.device("cpu"), torch.float64)(a))
    ratios = [float(s(u - v).norm() / (u - v).norm()) for u, v in ((a, b), (a, 3 * b), (a + b, -b))]
    assert all(abs(r - 1) < 0.2 for r in ratios)
    small = ParameterSketch(100, 16, seed=3, device=torch.device("cpu"), dtype=torch.float64)
    assert small.index is None and torch.allclose(small(torch.eye(100)[7]), small.gaussian[:, 7])

    sched = Schedule({"trajectory": 10, "eval": 10}, total_steps=40, dense_until={"trajectory": 5})
    assert [t for t in range(41) if "trajectory" in sched.due(t)] == [0, 1, 2, 3, 4, 5, 10, 20, 30, 40]
    assert [t for t in range(41) if "eval" in sched.due(t)] == [0, 10, 20, 30, 40]
    over = TINY + ["metrics.names=[trajectory]", "metrics.trajectory_steps=5", "metrics.trajectory_dim=32"]
    run_in_process(compose, tmp_path / "r", over)
    t = read_arrays(tmp_path / "r")["trajectory"]
    assert t.steps.tolist() == [0, 1, 2, 3, 4, 5, 10, 20, 30, 40] and t.values.shape == (10, 32)
    assert t.values.dtype == np.float32 and np.isfinite(t.values).all()


@pytest.mark.parametrize("preset", ["eos", "light", "full", "appendix_d", "none"])
def test_every_metrics_preset_names_known_metrics_and_runs(compose, tmp_path, preset):
    from ijr_cli.core.config import check_metric_names

    names = list(compose([f"metrics={preset}"]).metrics.names)
    assert check_metric_names(names) == names
    over = TINY + [f"metrics={preset}", "metrics.n_per_example=16", "metrics.batch_sharpness_batches=2",
                   "metrics.trajectory_steps=3", "metrics.n_input_jac=4", "trainer.max_steps=10"]  # fmt: skip
    assert run_in_process(compose, tmp_path / "r", over) == 0
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    scalar = [n for n in names if n not in M.ARRAY_METRICS]
    assert all(n in rows[-1] for n in scalar), [n for n in scalar if n not in rows[-1]]
